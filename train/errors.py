"""The train package's errors (under the product's root, engine/errors.py)."""

from ganomaly_edge.engine.errors import GanomalyError


class TrainError(GanomalyError):
    """An error of training, evaluation, export or engine building."""


class TrainConfigError(TrainError, ValueError):
    """Training settings or data that do not fit together (device, precision, sizes, resume)."""


class DeviceUnavailable(TrainError, RuntimeError):
    """The device or precision asked for is not there (no CUDA GPU, no bfloat16)."""
