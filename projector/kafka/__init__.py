"""The Kafka side of the projector: lenient record reading, client settings."""
