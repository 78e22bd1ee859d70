"""ganomaly-edge agent: camera -> engine -> alarm -> MQTT. Never imports torch."""
