"""The agent package's root error (under the product's, engine/errors.py)."""

from ganomaly_edge.engine.errors import GanomalyError


class AgentError(GanomalyError):
    """An error of the agent: configuration, sources, store, MQTT."""
