"""GenICam cameras (GigE Vision, USB3 Vision: Basler, FLIR, Allied Vision, Hikrobot, ...) through
Aravis, the open GenICam stack, from Python by GObject introspection.

Optional: ``pip install 'ganomaly-edge[genicam]'`` (PyGObject) and Debian's ``gir1.2-aravis-0.8``
(``deploy/install.sh --genicam`` installs both). Without them a genicam camera stops the agent at
start with that advice; nothing else needs them.

Buffers are allocated once (``genicam.buffers``) and every popped buffer is pushed back after its
pixels are copied, so a stall or a burst never grows memory. A lost link (the camera's heartbeat
fails, or no frame for ``stall_timeout_s``) is a SourceError: the supervisor reopens the camera
with its paced retry, as for every other source.
"""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np

from .config import GenicamConfig, SourceConfig
from .sources import Frame, SourceError

log = logging.getLogger(__name__)

MISSING = ("genicam cameras need Aravis through GObject introspection: pip install 'ganomaly-edge[genicam]' "
           "(PyGObject) and apt install gir1.2-aravis-0.8 (deploy/install.sh --genicam does both)")

# GenICam PFNC name -> (numpy dtype, OpenCV conversion to BGR or None for grey, bits of significance).
# OpenCV names a Bayer pattern by its second row (BayerBG2BGR is RGGB); these older names exist in
# every OpenCV a device has (the RGGB-style aliases are newer).
FORMATS = {
    "Mono8": (np.uint8, None, 8), "Mono10": (np.uint16, None, 10), "Mono12": (np.uint16, None, 12),
    "Mono16": (np.uint16, None, 16),
    "BayerRG8": (np.uint8, cv2.COLOR_BayerBG2BGR, 8), "BayerBG8": (np.uint8, cv2.COLOR_BayerRG2BGR, 8),
    "BayerGR8": (np.uint8, cv2.COLOR_BayerGB2BGR, 8), "BayerGB8": (np.uint8, cv2.COLOR_BayerGR2BGR, 8),
    "BayerRG16": (np.uint16, cv2.COLOR_BayerBG2BGR, 16), "BayerBG16": (np.uint16, cv2.COLOR_BayerRG2BGR, 16),
    "BayerGR16": (np.uint16, cv2.COLOR_BayerGB2BGR, 16), "BayerGB16": (np.uint16, cv2.COLOR_BayerGR2BGR, 16),
    "RGB8": (np.uint8, cv2.COLOR_RGB2BGR, 8), "BGR8": (np.uint8, None, 8),
}


def aravis():
    """The Aravis module; ImportError with what to install when it is missing."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as e:
        raise ImportError(f"{MISSING} ({e})") from None
    return Aravis


def device_ids() -> list[str]:
    Aravis = aravis()
    Aravis.update_device_list()
    return [Aravis.get_device_id(i) for i in range(Aravis.get_n_devices())]


def to_image(data: bytes, width: int, height: int, fmt: str) -> np.ndarray:
    """The pixels of one buffer as a grey or BGR image, uint8 or uint16 (Mono10/12 scaled to 16 bits,
    so a window is in 16-bit units whatever the sensor's depth)."""
    dtype, conv, bits = FORMATS[fmt]
    planes = 3 if fmt in ("RGB8", "BGR8") else 1
    n = width * height * planes * np.dtype(dtype).itemsize
    if len(data) < n:
        raise SourceError(f"genicam buffer holds {len(data)} bytes, a {width}x{height} {fmt} image needs {n}: "
                          "a packed format? set genicam.pixel_format to an unpacked one (e.g. Mono12, not "
                          "Mono12Packed)")
    img = np.frombuffer(data, dtype, count=width * height * planes).reshape(height, width, planes)
    if bits < 16 and dtype == np.uint16:
        img = img << (16 - bits)
    if conv is not None:
        return cv2.cvtColor(img[:, :, 0] if planes == 1 else img, conv)
    return img.copy()


class GenicamSource:
    def __init__(self, cfg: SourceConfig, settings: GenicamConfig | None = None):
        Aravis = aravis()
        self.cfg, self.settings = cfg, settings or GenicamConfig()
        self.success = Aravis.BufferStatus.SUCCESS
        self.index = 0
        self.skipped = 0
        self.lost = threading.Event()
        try:
            # Discover first: a camera opened by id without a fresh device list can stream to an
            # address it cannot reach (no frames at all from the fake camera on loopback).
            Aravis.update_device_list()
            self.cam = Aravis.Camera.new(cfg.uri or None)
        except Exception as e:  # GLib.Error: not found, or found but not answering
            ids = device_ids()
            raise SourceError(f"cannot open GenICam camera {cfg.uri or '(the first)'!r}: {_message(e)}; cameras "
                              f"found: {ids or 'none'} (set source.uri to one of them; arv-tool-0.8 lists them; "
                              "GigE cameras must be on this host's subnet: docs/plant.md)") from None
        try:
            self._configure()
            self.format = self.cam.get_pixel_format_as_string()
            if self.format not in FORMATS:
                raise SourceError(f"camera {cfg.uri!r} sends {self.format}, which the model cannot take: set "
                                  f"genicam.pixel_format to one of {', '.join(FORMATS)}")
            self.stream = self.cam.create_stream(None, None)
            if self.stream is None:
                raise SourceError(f"camera {cfg.uri!r}: cannot create its stream")
            payload = self.cam.get_payload()
            for _ in range(self.settings.buffers):
                self.stream.push_buffer(Aravis.Buffer.new_allocate(payload))
            if self.cam.is_gv_device():
                self.cam.get_device().connect("control-lost", lambda *a: self.lost.set())
            self.cam.start_acquisition()
        except SourceError:
            self.cam = None
            raise
        except Exception as e:
            self.cam = None
            raise SourceError(f"camera {cfg.uri!r}: {_message(e)}") from None
        log.info("genicam %s: %s, %s", cfg.uri or "(first camera)", self.format,
                 f"trigger {self.settings.trigger}" if self.settings.trigger else "free-running")

    def _configure(self) -> None:
        s, cam = self.settings, self.cam
        if s.pixel_format:
            offered = list(cam.dup_available_pixel_formats_as_strings() or [])
            if s.pixel_format not in offered:
                raise SourceError(f"camera {self.cfg.uri!r} does not offer pixel format {s.pixel_format} "
                                  f"(it offers {', '.join(offered)}): set genicam.pixel_format to one of those "
                                  f"the model can take ({', '.join(f for f in offered if f in FORMATS)})")
            cam.set_pixel_format_from_string(s.pixel_format)
        if s.trigger:
            cam.set_trigger(s.trigger)
        else:
            cam.clear_triggers()
        if s.frame_rate and not s.trigger:
            cam.set_frame_rate(s.frame_rate)
        if s.exposure_us:
            cam.set_exposure_time(s.exposure_us)
        if s.gain_db is not None:
            cam.set_gain(s.gain_db)
        if cam.is_gv_device():
            if s.packet_size:
                cam.gv_set_packet_size(s.packet_size)
            if s.packet_delay is not None:
                cam.gv_set_packet_delay(s.packet_delay)

    def software_trigger(self) -> None:
        """Fire the camera's software trigger (genicam.trigger = 'Software')."""
        if self.cam is not None and self.settings.trigger == "Software":
            try:
                self.cam.software_trigger()
            except Exception as e:
                log.warning("genicam %s: software trigger failed: %s", self.cfg.uri, _message(e))

    def read(self) -> Frame | None:
        if self.lost.is_set():
            raise SourceError(f"genicam camera {self.cfg.uri!r}: control link lost (heartbeat failed)")
        buf = self.stream.timeout_pop_buffer(200_000)  # µs: short, so a stop or a lost link is seen
        if buf is None:
            return None
        try:
            if buf.get_status() != self.success:
                self.skipped += 1  # an incomplete frame (lost packets): counted, never scored
                log.debug("genicam %s: buffer status %s", self.cfg.uri, buf.get_status())
                return None
            img = to_image(buf.get_data(), buf.get_image_width(), buf.get_image_height(), self.format)
            arrived_ns = buf.get_system_timestamp()
        finally:
            self.stream.push_buffer(buf)  # always back: nothing leaks, whatever happened to the frame
        # The frame's time is when it reached the host (Aravis's system timestamp, wall clock in
        # ns), not when it was popped: a frame that waited in the stream's queue is not the frame
        # of a trigger that came while it waited. No timestamp or a clock step: now.
        wall, mono = time.time(), time.monotonic()
        age = wall - arrived_ns / 1e9 if arrived_ns else 0.0
        if not 0.0 <= age < 5.0:
            age = 0.0
        frame = Frame(img, self.index, wall - age, mono - age, t_media=mono - age)
        self.index += 1
        return frame

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop_acquisition()
            except Exception as e:  # the camera is gone: nothing to stop
                log.debug("genicam %s: stop_acquisition: %s", self.cfg.uri, _message(e))
        self.stream = self.cam = None


def _message(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)
