"""Kafka: topics, the trigger (intake → landing → retraining), the publisher and lifecycle events."""
