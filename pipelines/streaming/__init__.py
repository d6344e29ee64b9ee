"""Kafka: topics, the trigger (intake → landing → launch), the publisher and lifecycle events."""
