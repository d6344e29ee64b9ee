"""Kafka intake: raw records checked against the feature spec, refused ones dead-lettered."""
