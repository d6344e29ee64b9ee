"""Canary rollouts: pure decisions, evidence (Prometheus or Kafka), cluster and overlay targets, the CLI."""
