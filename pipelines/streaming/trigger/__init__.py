"""The Kafka trigger: the consumer loop, its health port and its command line."""
