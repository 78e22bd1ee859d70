"""Agent configuration: TOML file, every key overridable from the environment.

Environment variables use the prefix ``GANOMALY_`` and ``__`` between levels, e.g.
``GANOMALY_MQTT__HOST=broker.local`` or ``GANOMALY_MQTT__PORT=8883``. Unknown keys are rejected
everywhere, and every field carries a description (``config.example.toml`` lists them all).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from ganomaly_edge.engine.registry import BackendChoice

from .errors import AgentError
from .redact import redact, remember, remember_uri


class Strict(BaseModel):
    # NaN and infinities are refused everywhere: a threshold of nan never alarms, -inf always does.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TLSConfig(Strict):
    ca_file: str | None = Field(None, description="CA certificate (PEM) that signed the broker's certificate")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(None, description="client private key (PEM) for mutual TLS")
    insecure: bool = Field(False, description="skip broker hostname verification (testing only)")


class MqttConfig(Strict):
    host: str = Field("127.0.0.1", min_length=1, pattern=r"^\S+$", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    client_id: str | None = Field(None, description="MQTT client id; default ganomaly-<machine id> (unique per "
                                                    "device even where devices share a host name)")
    discovery: bool = Field(True, description="publish Home Assistant MQTT discovery: per camera an anomaly binary "
                                              "sensor, the last score and the latest crop")
    discovery_prefix: str = Field("homeassistant", min_length=1, description="Home Assistant's discovery prefix "
                                                                          "(a topic: no wildcards + or #, no "
                                                                          "leading $, no NUL)")
    username: str | None = Field(None, description="user name, if the broker requires one")
    password: SecretStr | None = Field(None, description="password; prefer password_file or the environment")
    password_file: str | None = Field(
        None, description="file holding the password; a relative name is looked up in systemd's "
                          "$CREDENTIALS_DIRECTORY first")
    keepalive: int = Field(30, ge=5, le=3600, description="keepalive interval in seconds")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    tls: TLSConfig | None = Field(None, description="TLS settings; absent = plain TCP")
    prefix: str | None = Field(None, description="topic prefix; default ganomaly/<device_id> (no wildcards "
                                                 "+ or #, no leading $, no NUL)")
    reconnect_min_s: float = Field(1.0, gt=0, le=3600, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="longest reconnect delay")
    stats_interval_s: float = Field(10.0, gt=0, le=86400, description="how often <prefix>/stats is published")

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, v: str | None) -> str | None:
        if v is not None:
            check_topic_prefix(v)
        return v

    @field_validator("discovery_prefix")
    @classmethod
    def _valid_discovery_prefix(cls, v: str) -> str:
        check_topic_prefix(v, "mqtt.discovery_prefix")
        return v
    max_inflight: int = Field(20, ge=1, le=1000, description="unacknowledged QoS 1 messages at a time")

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file:
            path = self.password_file
            cred = os.environ.get("CREDENTIALS_DIRECTORY")
            if not os.path.isabs(path) and cred and os.path.exists(os.path.join(cred, path)):
                path = os.path.join(cred, path)
            try:
                return Path(path).read_text().strip()
            except OSError as e:
                raise ConfigError(f"mqtt.password_file {path!r} cannot be read: {e}") from e
        return None


class RoiConfig(Strict):
    x: int = Field(0, ge=0, description="left edge of the region of interest, pixels")
    y: int = Field(0, ge=0, description="top edge, pixels")
    w: int = Field(..., gt=0, description="width, pixels")
    h: int = Field(..., gt=0, description="height, pixels")


class SourceConfig(Strict):
    kind: Literal["camera", "file", "url", "gstreamer", "folder", "genicam"] = Field(
        ..., description="camera index, video file, RTSP/HTTP URL, GStreamer pipeline, image folder, or an "
                         "industrial GigE Vision / USB3 Vision camera through Aravis (genicam)")
    uri: str = Field(..., description="camera index ('0'), file path, URL, pipeline string, folder path, or the "
                                      "GenICam device id as Aravis lists it (arv-tool-0.8; '' = the first camera)")
    loop: bool = Field(False, description="file: start again at the end instead of finishing")
    fps: float | None = Field(None, gt=0, description="file: play back at this rate (default: as fast as "
                                                       "inference allows, never dropping)")
    watch: bool = Field(True, description="folder: keep watching for new images after the existing ones")
    poll_interval_s: float = Field(0.5, gt=0, le=3600, description="folder: how often to look for new images")
    rescan_s: float = Field(60.0, gt=0, le=86400, description="folder: new files are found by inotify; list the "
                                                              "whole folder this often anyway (files inotify "
                                                              "cannot see, e.g. written over NFS)")
    settle_s: float = Field(1.0, ge=0, le=3600, description="folder: take a file once its size and modification "
                                                           "time have not changed for this long (a writer may "
                                                           "still be copying it)")
    max_pixels: int = Field(100_000_000, ge=1, description="folder: skip images whose header claims more pixels "
                                                           "than this (a decompression bomb)")
    stall_timeout_s: float = Field(10.0, gt=0, le=3600, description="no frame for this long = stalled: reopen the source")
    retry_min_s: float = Field(1.0, gt=0, le=3600, description="first delay before reopening a failed source")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="longest delay between reopen attempts")

    @property
    def live(self) -> bool:
        """Live sources drop the oldest frame when inference falls behind; files and folders wait."""
        return self.kind in ("camera", "url", "gstreamer", "genicam") or (self.kind == "file" and self.fps is not None)


class DecisionConfig(Strict):
    threshold: float | None = Field(None, description="alarm threshold in calibrated units (the bundle's "
                                                      "calibration puts it at 1.0); set to override")
    k: int | None = Field(None, ge=1, description="alarm when k of the last n frames exceed the threshold "
                                                  "(default 2; 1 for folder sources, where each image is an item)")
    n: int | None = Field(None, ge=1, description="window length for k-of-n (default 3; 1 for folders)")
    cooldown_s: float | None = Field(None, ge=0, description="no new alarm for this long after one (default "
                                                             "2 s; 0 for folders)")

    def resolved(self, kind: str) -> "DecisionConfig":
        folder = kind == "folder"
        k = self.k if self.k is not None else (1 if folder else 2)
        n = self.n if self.n is not None else (1 if folder else 3)
        if k > n:
            raise ConfigError(f"decision.k ({k}) cannot exceed decision.n ({n})")
        cd = self.cooldown_s if self.cooldown_s is not None else (0.0 if folder else 2.0)
        return DecisionConfig(threshold=self.threshold, k=k, n=n, cooldown_s=cd)


class LocalisationConfig(Strict):
    blur: int = Field(3, ge=0, le=31, description="Gaussian blur kernel on the residual map (0 = none; odd)")
    sigma: float = Field(3.0, gt=0, description="a pixel is anomalous above mean + sigma * std of the map")
    min_fraction: float = Field(0.4, ge=0, le=1, description="... and above this fraction of the map's maximum")
    min_area: int = Field(2, ge=1, description="smallest region kept, in model-input pixels")
    max_boxes: int = Field(5, ge=1, le=50, description="at most this many boxes per alarm")
    pad: float = Field(0.15, ge=0, le=2, description="crop margin around each box, as a share of its size")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of crops and overlay")
    min_crop_px: int = Field(96, ge=16, le=4096, description="shortest side of a crop: the region around a small "
                                                            "box grows to this many frame pixels (context), and "
                                                            "a crop of a smaller frame is enlarged to it")
    max_crop_px: int = Field(512, ge=32, description="longest side of a crop; larger crops are scaled down")
    max_overlay_px: int = Field(1024, ge=64, description="longest side of the heat-map overlay")
    overlay: bool = Field(True, description="publish the whole frame with the boxes outlined, numbered as their "
                                            "crops (the residual's heat map inside them)")

    @field_validator("blur")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v and v % 2 == 0:
            raise ValueError("blur must be odd (or 0)")
        return v


# -- the plant's side: industrial cameras, triggered items, 16-bit windows ---------------------
GENICAM_FORMATS = ("Mono8", "Mono10", "Mono12", "Mono16", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8",
                   "BayerRG16", "BayerBG16", "BayerGR16", "BayerGB16", "RGB8", "BGR8")


class GenicamConfig(Strict):
    """Settings written to a GenICam camera (kind = "genicam") when it opens; unset = the camera's own."""

    pixel_format: str | None = Field(None, description="pixel format: " + ", ".join(GENICAM_FORMATS) +
                                     " (Mono10/12 are scaled to 16 bits; windows are in 16-bit units)")
    exposure_us: float | None = Field(None, gt=0, description="exposure time, microseconds")
    gain_db: float | None = Field(None, ge=0, description="analogue gain, dB")
    frame_rate: float | None = Field(None, gt=0, le=10000, description="acquisition frame rate (free-running)")
    packet_size: int | None = Field(None, ge=576, le=16384, description="GigE Vision stream packet size, bytes "
                                                                        "(9000 with jumbo frames; docs/plant.md)")
    packet_delay: int | None = Field(None, ge=0, description="GigE Vision inter-packet delay, ns (several "
                                                             "cameras on one link)")
    trigger: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$",
                                description="frame trigger source: 'Software' (the agent fires it on each item "
                                            "trigger), 'Line0'.. (the camera's hardware input); unset = free-running")
    buffers: int = Field(8, ge=2, le=256, description="stream buffers allocated once and reused")

    @field_validator("pixel_format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        if v is not None and v not in GENICAM_FORMATS:
            raise ValueError(f"pixel format {v!r} cannot feed the model: use one of {', '.join(GENICAM_FORMATS)} "
                             "(arv-tool-0.8 control PixelFormat lists what the camera offers)")
        return v


class GpioConfig(Strict):
    """A GPIO line as the item trigger (items.trigger = "gpio"): one item per edge, read through the
    kernel's GPIO character device with libgpiod's Python bindings, v2 (the [gpio] extra). The names
    are libgpiod's own, as gpiodetect, gpioinfo and gpiomon take them."""

    chip: str = Field("/dev/gpiochip0", min_length=1, pattern=r"^\S+$",
                      description="the GPIO chip: its path (/dev/gpiochip0), name (gpiochip0), number (0) or "
                                  "label, as gpiodetect lists them (e.g. tegra234-gpio on a Jetson Orin)")
    line: int | str | None = Field(None, description="the input line: its offset on the chip (an integer) or its "
                                                     "name as gpioinfo lists it (e.g. PQ.05); required for "
                                                     "trigger = 'gpio'")
    edge: Literal["rising", "falling", "both"] = Field(
        "rising", description="which edges are items: rising (inactive to active), falling or both (each "
                              "edge is then one item); edges are of the logical value, see active_low")
    bias: Literal["as-is", "pull-up", "pull-down", "disabled"] = Field(
        "as-is", description="the line's internal bias: as-is (leave it), pull-up (an open-collector "
                             "photo-eye pulling to ground), pull-down or disabled; not every chip has one")
    active_low: bool = Field(False, description="the line is active when low (a sensor that pulls it to "
                                                "ground): rising then means the physical high-to-low edge")
    debounce_ms: float = Field(0.0, ge=0, le=1000, description="the kernel's debounce period: an edge counts "
                                                               "only once the line has been stable this long "
                                                               "(0 = off; a relay contact needs a few ms)")
    event_buffer_size: int | None = Field(None, ge=1, le=1024, description="edges the kernel holds until the "
                                          "agent reads them (default: the kernel's, 16); edges lost when it "
                                          "overflows are counted as missed triggers")

    @field_validator("line", mode="before")
    @classmethod
    def _offset_or_name(cls, v):
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"line must be an offset (an integer) or a line name (text), not {v!r}")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"line offset {v} is negative: offsets count from 0 (gpioinfo lists them)")
        if isinstance(v, str) and not v.strip():
            raise ValueError("line is empty: give the line's offset or its name as gpioinfo lists it")
        return v.strip() if isinstance(v, str) else v


class ItemsConfig(Strict):
    """Item mode: one frame per trigger, scored as one item (k-of-n debouncing off), and a result
    on <prefix>/<camera>/result for every item (also for folder sources, where a file is an item)."""

    trigger: Literal["off", "mqtt", "camera", "gpio"] = Field(
        "off", description="off: a stream of frames; mqtt: one item per message on <prefix>/<camera>/trigger "
                           "(payload: the item id, optional); camera: every frame is an item (the camera's own "
                           "hardware trigger, genicam.trigger = 'Line0'); gpio: one item per edge on a GPIO "
                           "line (items.gpio; the [gpio] extra)")
    results: bool | None = Field(None, description="publish a result per item (default: on for folders and in "
                                                   "item mode)")
    timeout_s: float = Field(2.0, gt=0, le=3600, description="a trigger that gets no frame within this is missed "
                                                             "(counted; its result says ok = false)")
    late_ms: float = Field(200.0, gt=0, description="a trigger whose frame comes later than this is counted late")
    gpio: GpioConfig = Field(default_factory=GpioConfig, description="the GPIO line of trigger = 'gpio'")

    @model_validator(mode="after")
    def _gpio_line_given(self) -> "ItemsConfig":
        if self.trigger == "gpio" and self.gpio.line is None:
            raise ValueError("trigger = 'gpio' needs items.gpio.line: the line's offset or its name as gpioinfo "
                             "lists it (and items.gpio.chip, default /dev/gpiochip0)")
        return self


class CameraConfig(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]+$", max_length=128,
                      description="camera name, used in topics (letters, digits, _ and -)")
    source: SourceConfig = Field(..., description="where frames come from")
    roi: RoiConfig | None = Field(None, description="region of interest; absent = the whole frame")
    rotate: Literal[0, 90, 180, 270] = Field(0, description="clockwise rotation applied after the ROI")
    working_size: tuple[int, int] | None = Field(
        None, description="[width, height] the ROI (after rotation) is resized to before it is cut into tiles; "
                          "default: the bundle's working resolution, for which its threshold was calibrated. "
                          "A tiled model takes any size of at least one tile; an untiled one only its own")
    bundle: str | None = Field(None, description="model bundle for this camera; default model.bundle")
    genicam: GenicamConfig = Field(default_factory=GenicamConfig, description="GenICam camera settings")
    items: ItemsConfig = Field(default_factory=ItemsConfig, description="item mode and per-item results")
    window: str | None = Field(None, description="16-bit images: intensity window onto the model's 8 bits, "
                                                 "'LO:HI' raw units or 'pLO:pHI' percentiles; default the "
                                                 "bundle's (the one it was trained with), else the top 8 bits")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="alarm decision")
    localisation: LocalisationConfig = Field(default_factory=LocalisationConfig,
                                             description="boxes and crops of anomalous regions")

    @field_validator("window")
    @classmethod
    def _valid_window(cls, v: str | None) -> str | None:
        if v is not None:
            from ganomaly_edge.engine.window import Window

            Window.parse(v)  # a WindowError (ValueError) names the problem
        return v

    @property
    def item_mode(self) -> bool:
        return self.items.trigger != "off"

    @property
    def results(self) -> bool:
        return self.items.results if self.items.results is not None else (
            self.item_mode or self.source.kind == "folder")

    @field_validator("rotate", mode="before")
    @classmethod
    def _rotate_from_text(cls, v):
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v  # from the environment

    @field_validator("working_size", mode="before")
    @classmethod
    def _size_from_text(cls, v):
        if isinstance(v, str):  # "1280x720" from the environment
            parts = v.lower().replace(",", "x").split("x")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"working_size must be WIDTHxHEIGHT (e.g. 640x360), not {v!r}")
            return (int(parts[0]), int(parts[1]))
        return v

    @field_validator("working_size")
    @classmethod
    def _size_positive(cls, v):
        if v is not None and not (16 <= v[0] <= 16384 and 16 <= v[1] <= 16384):
            raise ValueError(f"working_size {v[0]}x{v[1]} is out of range (16 to 16384 pixels a side)")
        return v


class ModelConfig(Strict):
    bundle: str | None = Field(None, description="model bundle directory or archive (ganomaly-build-engine)")
    backend: BackendChoice = Field(
        "auto", description="auto = a TensorRT plan for this GPU when present, else the faster of ONNX Runtime "
                            "and OpenVINO (when installed: the [openvino] extra), timed on load")
    openvino_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="OpenVINO backend: bf16 where asked and the CPU has it, else fp32 (auto = fp32); an "
                            "INT8 bundle runs its QDQ graph in int8 whatever this says")
    providers: list[Literal["tensorrt", "cuda", "cpu"]] | None = Field(
        None, min_length=1, description="ONNX Runtime execution providers to try, in order (an NVIDIA host "
                                        "with onnxruntime-gpu: [\"tensorrt\", \"cuda\", \"cpu\"]); default: "
                                        "CUDA when this ONNX Runtime has it, else the CPU. The log names the "
                                        "one used")
    threads: int = Field(0, ge=0, le=256, description="ONNX Runtime threads per inference worker (0 = the cores "
                                              "divided among the workers)")
    workers: int = Field(0, ge=0, le=64, description="inference threads per camera, each taking its own "
                                                     "micro-batch; decisions stay in frame order (0 = auto: one "
                                                     "per core on the ONNX Runtime CPU backend, 1 on a GPU; 1 with "
                                                     "every core when every camera is in item mode on a tiled "
                                                     "bundle)")
    allow_mismatch: bool = Field(False, description="load even if the self-test against the bundle's "
                                                    "reference outputs fails (not recommended)")
    max_batch: int = Field(8, ge=1, le=256, description="largest micro-batch when frames are waiting")
    reload_after_failures: int = Field(5, ge=1, le=10000, description="after this many inference failures in a "
                                                                      "row the camera goes offline with the error "
                                                                      "and the engine is reloaded")
    spinning: bool = Field(False, description="let idle ONNX Runtime threads spin-wait (lower latency on "
                                              "an otherwise idle machine, but they take CPU from capture)")
    trusted_keys: list[str] = Field(
        default_factory=list, description="ed25519 public keys (PEM files); when set, only bundles signed by one "
                                          "of them load (ganomaly-build-engine --sign-key). Empty = signatures "
                                          "are not checked")

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, v):
        if isinstance(v, str):  # GANOMALY_MODEL__TRUSTED_KEYS=/etc/a.pub,/etc/b.pub
            v = v.strip()
            if v.startswith("["):
                return v
            return [p.strip() for p in v.split(",") if p.strip()]
        return v


    def parallelism(self, cores: int, items_split: bool = False) -> tuple[int, int]:
        """(inference workers per camera, ONNX Runtime threads per worker) on ``cores`` cores;
        an engine that takes no concurrent calls runs one worker whatever this says.

        ``items_split``: every camera scores one frame per trigger (item mode) and every frame is
        at least two tiles per core, so the time from a trigger to its decision counts more than
        frames per second and a frame's call can be split. Auto then takes one worker with every
        core: its ONNX Runtime engine runs a frame's tiles as one single-threaded run per core,
        and an item is decided in about 0.6x the time of a one-thread call (300 x 300 bundle of 49
        tiles, 2 cores: p50 94 against 159 ms, docs/plant.md). A frame of one input gains nothing
        from it (the same call on every thread, with a longer tail), so it stays one per core."""
        workers = self.workers or (1 if items_split else cores)
        return workers, self.threads or max(1, cores // workers)


class StoreConfig(Strict):
    path: str = Field("/var/lib/ganomaly-edge/events.db", min_length=1, description="SQLite event store (WAL)")
    max_events: int = Field(10000, ge=1, le=10_000_000, description="keep at most this many unsent events "
                                                                    "(oldest evicted)")
    max_mb: float = Field(512.0, gt=0, le=1_000_000, description="keep at most this many MB of unsent events")
    max_age_s: float = Field(7 * 86400.0, gt=0, le=366 * 86400.0, description="drop unsent events older than this")

    @field_validator("path")
    @classmethod
    def _file_path(cls, v: str) -> str:
        if v.endswith("/") or os.path.isdir(v):
            raise ValueError(f"{v!r} is a directory: store.path names the SQLite file, e.g. {v.rstrip('/')}/events.db")
        return v


class HistoryConfig(Strict):
    path: str | None = Field(None, min_length=1,
                             description="folder of the alarm history (history.db and each alarm's images), kept "
                                         "after delivery for the console and operator verdicts; default: a "
                                         "'history' folder beside store.path")
    enabled: bool = Field(True, description="keep alarms after delivery (the console needs it)")
    max_days: float = Field(30.0, gt=0, le=3660, description="drop alarms older than this many days")
    max_mb: float = Field(2048.0, gt=0, le=10_000_000, description="keep at most this many MB of alarms and "
                                                                   "images (oldest dropped first, counted)")
    frame_format: Literal["png", "jpg"] = Field("png", description="the full frame as the model saw it (after "
                                                                 "ROI and rotation, before resize): png = "
                                                                 "lossless, jpg = smaller")
    frame_quality: int = Field(95, ge=50, le=100, description="JPEG quality when frame_format = \"jpg\"")
    sample_every: int = Field(0, ge=0, le=1_000_000,
                              description="keep one in this many scored frames of each camera, alarm or not, "
                                          "in <history>/samples/<camera>/ at the model's working resolution: the "
                                          "line as it is now, for ganomaly-calibrate --normal and fine-tuning "
                                          "(docs/feedback.md); 0 = off")
    sample_keep: int = Field(1000, ge=1, le=1_000_000,
                             description="sample frames kept per camera (the oldest deleted first)")

    @field_validator("path")
    @classmethod
    def _folder_path(cls, v: str | None) -> str | None:
        if v is not None and os.path.isfile(v):
            raise ValueError(f"{v!r} is a file: history.path names a folder, e.g. /var/lib/ganomaly-edge/history")
        return v


LOOPBACK = ("127.0.0.1", "::1", "localhost", "[::1]")


class HttpConfig(Strict):
    listen: str = Field("", description="host:port of the console (review page, API, /metrics); \"\" = off. "
                                        "Anything but loopback needs token_file")
    token_file: str | None = Field(None, description="file holding the console's bearer token; a relative name is "
                                                     "looked up in systemd's $CREDENTIALS_DIRECTORY first")
    tls_cert_file: str | None = Field(None, description="certificate (PEM) to serve HTTPS; with tls_key_file")
    tls_key_file: str | None = Field(None, description="private key (PEM) of tls_cert_file")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v and split_listen(v) is None:
            raise ValueError(f"listen {v!r} must be host:port (e.g. 127.0.0.1:8080 or [::1]:8080), or \"\" for off")
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> "HttpConfig":
        if self.listen:
            host, _ = split_listen(self.listen)
            if host not in LOOPBACK and not self.token_file:
                raise ValueError(f"http.listen {self.listen!r} is not loopback: set http.token_file (a file holding "
                                 "a long random token) so that only those who know it can review and give verdicts")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("http.tls_cert_file and http.tls_key_file go together: set both or neither")
        return self

    def resolved_token(self) -> str | None:
        """The token (from token_file), or None when none is configured. ValueError when the file is
        missing, unreadable or empty: the console never runs open by accident."""
        if not self.token_file:
            return None
        path = self.token_file
        cred = os.environ.get("CREDENTIALS_DIRECTORY")
        if not os.path.isabs(path) and cred and os.path.exists(os.path.join(cred, path)):
            path = os.path.join(cred, path)
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"http.token_file {path!r} cannot be read: {e}; write a long random token into it "
                             "(e.g. openssl rand -hex 32 > FILE)") from e
        if len(token) < 8:
            raise ValueError(f"http.token_file {path!r} is empty or shorter than 8 characters; write a long random "
                             "token into it (e.g. openssl rand -hex 32 > FILE)")
        return token


def split_listen(v: str) -> tuple[str, int] | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANOMALY_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field(default_factory=lambda: socket.gethostname().split(".")[0] or "edge",
                           pattern=r"^[A-Za-z0-9_.-]+$", max_length=128,
                           description="this device's id, used in topics; default the host name")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log verbosity")
    queue_size: int = Field(0, ge=0, le=1024, description="frames buffered between capture and inference per "
                                                        "camera (0 = auto: a full micro-batch for every worker)")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the default model bundle and backend")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker connection")
    store: StoreConfig = Field(default_factory=StoreConfig, description="durable event store")
    history: HistoryConfig = Field(default_factory=HistoryConfig, description="alarm history kept after delivery")
    http: HttpConfig = Field(default_factory=HttpConfig, description="the console: review page, API, metrics")
    cameras: list[CameraConfig] = Field(..., min_length=1, description="one entry per camera or feed")

    _toml_file: Any = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, v):
        return v.strip().upper() if isinstance(v, str) else v  # "info" as well as "INFO"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        names = [c.name for c in self.cameras]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"camera names must be unique; repeated: {sorted(dup)}")
        for c in self.cameras:
            if not (c.bundle or self.model.bundle):
                raise ValueError(f"camera {c.name!r} has no bundle and model.bundle is not set")
            c.decision.resolved(c.source.kind)
        check_topic_prefix(self.prefix)  # the default one too: it is made of device_id
        for topic in self.longest_topics():
            check_topic(topic)
        return self

    def longest_topics(self) -> list[str]:
        """The longest topic the agent publishes under each configured name (an alarm's overlay, a
        discovery config), to hold against MQTT's limits before anything is sent."""
        out = []
        for c in self.cameras:
            out.append(f"{self.prefix}/{c.name}/alarm/{'0' * 32}/overlay")
            if self.mqtt.discovery:
                node = f"ganomaly_edge_{self.device_id}_{c.name}"
                out.append(f"{self.mqtt.discovery_prefix.rstrip('/')}/binary_sensor/{node}/anomaly/config")
        return out

    @property
    def history_path(self) -> str:
        return self.history.path or os.path.join(os.path.dirname(os.path.abspath(self.store.path)), "history")

    @property
    def prefix(self) -> str:
        return (self.mqtt.prefix or f"ganomaly/{self.device_id}").rstrip("/")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"ganomaly-{machine_id()[:14]}"


def machine_id() -> str:
    """systemd's machine id (unique per installation), else the MAC address."""
    import uuid

    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return f"{uuid.getnode():012x}"


class ConfigError(AgentError, ValueError):
    pass


CAMERA_ENV = "GANOMALY_CAMERAS__"


def cameras_with_env(path: str | None, environ) -> list | None:
    """The config file's cameras with ``GANOMALY_CAMERAS__<name>__<key>[__<key>...]=value`` applied
    to the camera of that name (cameras are a list, which the environment cannot index), or None
    when no such variable is set."""
    overrides = [(k[len(CAMERA_ENV):].split("__"), v) for k, v in environ.items()
                 if k.upper().startswith(CAMERA_ENV)]
    if not overrides:
        return None
    cameras = []
    if path is not None:
        try:
            import tomllib  # novermin (Python 3.10 takes the tomli fallback below)
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        with open(path, "rb") as f:
            cameras = tomllib.load(f).get("cameras", [])
    by_name = {str(c.get("name", "")).lower(): c for c in cameras if isinstance(c, dict)}
    for keys, value in overrides:
        cam = by_name.get(keys[0].lower())
        if cam is None or len(keys) < 2:
            raise ConfigError(f"{CAMERA_ENV}{'__'.join(keys)}: no camera named {keys[0]!r} in the config "
                              f"(cameras: {sorted(by_name)})")
        node = cam
        for key in keys[1:-1]:
            node = node.setdefault(key.lower(), {})
        node[keys[-1].lower()] = value
    return cameras


MAX_PREFIX_BYTES = 1024  # MQTT allows 65,535 bytes per topic; leave room for camera and event ids
MAX_TOPIC_BYTES = 65535  # MQTT's own limit (a UTF-8 string with a 16-bit length)


def check_topic_prefix(prefix: str, what: str = "topic prefix") -> None:
    """ValueError unless ``prefix`` can start every topic the agent publishes: a publish to a topic
    with a wildcard raises inside paho (on its network thread, where it would end delivery), and a
    broker refuses $-topics and NUL."""
    if not prefix.strip("/"):
        raise ConfigError(f"the {what} is empty")
    bad = sorted({c for c in prefix if c in "+#\x00"})
    if bad:
        raise ConfigError(f"{what} {prefix!r} contains {bad}: wildcards and NUL are not allowed in "
                          "topics one publishes to; write the plain topic, e.g. 'homeassistant'")
    if prefix.startswith("$"):
        raise ConfigError(f"{what} {prefix!r} starts with $: brokers reserve those topics ($SYS)")
    try:
        n = len(prefix.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {prefix!r} is not valid UTF-8 text") from None
    if n > MAX_PREFIX_BYTES:
        raise ConfigError(f"{what} is {n} bytes; keep it under {MAX_PREFIX_BYTES}")


def check_topic(topic: str) -> None:
    """ValueError unless ``topic`` is one MQTT lets a client publish to."""
    check_topic_prefix(topic, "topic")
    n = len(topic.encode("utf-8"))
    if n > MAX_TOPIC_BYTES:
        raise ConfigError(f"topic {topic[:60]!r}... is {n} bytes, above MQTT's {MAX_TOPIC_BYTES}: shorten "
                          "mqtt.prefix, the camera names or device_id")


def remember_secrets(settings: Settings) -> None:
    """Every credential the configuration holds is masked in whatever the agent writes (redact.py)."""
    for c in settings.cameras:
        remember_uri(c.source.uri)
    if settings.mqtt.password is not None:
        remember(settings.mqtt.password.get_secret_value())
    if settings.http.listen:
        token = settings.http.resolved_token()  # a missing or empty token file is a config error
        if token:
            remember(token)


def load_settings(path: str | None) -> Settings:
    """Read a TOML file (plus environment overrides) into validated settings."""
    from pydantic import ValidationError

    if path is not None and not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist (see config.example.toml)")
    Settings._toml_file = path
    try:
        cameras = cameras_with_env(path, os.environ)
        settings = Settings(cameras=cameras) if cameras is not None else Settings()
        remember_secrets(settings)
        return settings
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(redact(f"  {loc or '(top level)'}: {err['msg']}"))
        raise ConfigError(f"invalid configuration in {path or 'the environment'}:\n" + "\n".join(lines)) from None
    except (OSError, ValueError) as e:  # TOML syntax errors are ValueErrors
        raise ConfigError(redact(f"cannot read config {path!r}: {e}")) from None
    finally:
        Settings._toml_file = None
