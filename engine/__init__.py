"""ganomaly-edge runtime: the model bundle and the inference backends. Never imports torch."""

from .base import Engine, FrameError, SelfTestError
from .bundle import Bundle, BundleError, open_bundle
from .loader import GpuUnavailable, load

__all__ = ["Bundle", "BundleError", "Engine", "FrameError", "GpuUnavailable", "SelfTestError", "load", "open_bundle"]
