"""Training side: kfp pipelines and their steps, the Kafka trigger, monitoring, rollout."""
