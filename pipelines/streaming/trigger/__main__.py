"""The Kafka trigger: lands the models' events and launches retraining (``python -m pipelines.streaming.trigger``)."""

from pipelines.streaming.trigger.loop import main

if __name__ == "__main__":
    main()
