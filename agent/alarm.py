"""The alarm event as published on ``<prefix>/<camera>/alarm``: one typed model, from which
``agent/alarm.schema.json`` is generated (``python -m ganomaly_edge.agent.alarm``; a test checks
the committed file is current)."""

from __future__ import annotations

import json
import os
import sys
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2  # 2: raw_score and device_id; boxes carry residual (was an ambiguous score)
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alarm.schema.json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Strict):
    x: int = Field(ge=0, description="left edge, original-frame pixels")
    y: int = Field(ge=0, description="top edge, original-frame pixels")
    w: int = Field(ge=1, description="width, pixels")
    h: int = Field(ge=1, description="height, pixels")
    residual: float = Field(description="mean |x - G(x)| in the region, in normalised pixel units (0..2)")


class FrameSize(_Strict):
    w: int = Field(description="width of the original frame, pixels")
    h: int = Field(description="height of the original frame, pixels")


class ModelRef(_Strict):
    name: str = Field(description="the bundle's model name (ganomaly-build-engine --name)")
    hash: str = Field(description="the first 16 hex digits of the SHA-256 of the bundle's model.onnx")


class AlarmEvent(_Strict):
    """Published on <prefix>/<camera>/alarm with QoS 1. Crops and the overlay are raw JPEG on their
    own topics. Redeliveries carry the same id: drop ids already seen."""

    model_config = ConfigDict(extra="forbid", title="ganomaly-edge alarm event (schema 2)")

    id: str = Field(pattern="^[0-9a-f]{32}$", description="unique event id")
    ts: float = Field(description="capture time of the frame, seconds since the Unix epoch")
    device_id: str = Field(description="the agent's device id (config device_id)")
    camera: str = Field(pattern="^[A-Za-z0-9_-]+$", description="the camera's name (config cameras.name)")
    frame_index: int = Field(ge=0, description="index of the frame (or folder item) since the source opened")
    score: float = Field(description="calibrated anomaly score: 0 is a typical normal frame, the bundle's "
                                     "calibrated threshold is 1.0")
    raw_score: float = Field(description="the model's raw score, before calibration (units of the bundle's score)")
    threshold: float = Field(description="the alarm threshold, in calibrated units (as score)")
    boxes: list[Box] = Field(description="anomalous regions in original-frame pixels, most anomalous first")
    crops: list[str] = Field(description="topics of the JPEG crops, one per box, in order")
    overlay: Optional[str] = Field(None, description="topic of the heat-map overlay JPEG")
    frame_size: Optional[FrameSize] = Field(None, description="size of the original frame the boxes refer to")
    item: Optional[str] = Field(None, description="the item: its file name (folder sources) or its id (item mode: "
                                                  "the trigger's payload); its result on <prefix>/<camera>/result "
                                                  "names this alarm")
    model: ModelRef = Field(description="the model that scored the frame")
    schema_: Literal[2] = Field(SCHEMA_VERSION, alias="schema", description="this payload's schema version")

    def payload(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def schema_of(model: type[BaseModel], path: str) -> dict:
    """The published JSON schema of a payload model, identified by its file's name."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://github.com/ganomaly-edge/ganomaly-edge/agent/{os.path.basename(path)}",
            **model.model_json_schema(by_alias=True)}


def write_schema(text: str, default_path: str) -> None:
    """``python -m ganomaly_edge.agent.<module> [PATH]``: the schema file regenerated."""
    with open(sys.argv[1] if len(sys.argv) > 1 else default_path, "w") as f:
        f.write(text)


def json_schema() -> dict:
    return schema_of(AlarmEvent, SCHEMA_PATH)


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    write_schema(schema_text(), SCHEMA_PATH)
