"""The verdict on one item, as published on ``<prefix>/<camera>/result``: one typed model, from
which ``agent/result.schema.json`` is generated (``python -m ganomaly_edge.agent.result``; a test
checks the committed file is current).

Every item of a folder source or of a camera in item mode gets one, OK as well as NG: a reject
gate that hears nothing for a part knows the agent is stuck, instead of taking silence for OK."""

from __future__ import annotations

import json
import os
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .alarm import ModelRef, schema_of, write_schema

SCHEMA_VERSION = 1
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "result.schema.json")


class ItemResult(BaseModel):
    """Published on <prefix>/<camera>/result with QoS 1, through the same durable store as alarms
    (kept across broker outages and restarts, in order). Redeliveries carry the same id."""

    model_config = ConfigDict(extra="forbid", title="ganomaly-edge item result (schema 1)")

    id: str = Field(pattern="^[0-9a-f]{32}$", description="unique result id")
    ts: float = Field(description="capture time of the item's frame (or the trigger, for a missed item), "
                                  "seconds since the Unix epoch")
    device_id: str = Field(description="the agent's device id (config device_id)")
    camera: str = Field(pattern="^[A-Za-z0-9_-]+$")
    item: str = Field(description="the item's identity: the trigger's payload, a generated id for a trigger "
                                  "without one, or the file name (folder sources)")
    seq: int = Field(ge=0, description="items of this camera since the source opened, in order")
    ok: bool = Field(description="true: the item passes; false: reject it (anomalous, or not inspected)")
    score: Optional[float] = Field(description="calibrated anomaly score (threshold 1.0 unless overridden); "
                                               "null when the item was not inspected")
    threshold: float = Field(description="the decision threshold, in calibrated units (as score)")
    latency_ms: float = Field(ge=0, description="from the trigger (or the file being ready) to the decision")
    alarm: Optional[str] = Field(None, description="id of the alarm event (with crops) raised for this item")
    error: Optional[str] = Field(None, description="why the item was not inspected (e.g. a missed trigger); "
                                                   "ok is then false")
    model: ModelRef
    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")

    def payload(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def json_schema() -> dict:
    return schema_of(ItemResult, SCHEMA_PATH)


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    write_schema(schema_text(), SCHEMA_PATH)
