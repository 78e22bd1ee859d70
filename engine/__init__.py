"""ganomaly-edge runtime: the model bundle and the inference backends. Never imports torch."""
