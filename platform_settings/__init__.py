"""Settings shared by serving and training: the Kafka connection and where the platform keeps its state."""
