"""Reading one image file from a scanner folder without trusting it: regular files only, a pixel
cap checked on the header before anything is decoded, and a completeness check (PNG's IEND
chunk, JPEG's end-of-image marker) so a file still being written is not taken half-done."""

from __future__ import annotations

import os
import stat
import struct

import cv2
import numpy as np

from ganomaly_edge.engine.preprocess import to_channels


class SkipFile(Exception):
    """The file cannot be inspected; ``retry`` when it may still be being written."""

    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header, or None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + seg
    return None


def complete(data: bytes) -> bool:
    """False when a PNG or JPEG visibly ends early (its writer may still be at work)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-16:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" in data[-64:]
    return True


def read_image_file(path: str, channels: int, max_pixels: int) -> np.ndarray:
    """BGR or grey uint8 image; SkipFile with the reason otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SkipFile("it vanished before it could be read") from None
    except OSError as e:
        raise SkipFile(f"cannot stat it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SkipFile("not a regular file (a FIFO, device or directory named like an image)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise SkipFile("permission denied (the agent's user cannot read it)") from None
    except OSError as e:
        raise SkipFile(f"read error ({e.strerror})", retry=True) from None
    if not data:
        raise SkipFile("empty file", retry=True)
    if not complete(data):
        raise SkipFile("truncated (no end marker)", retry=True)
    size = header_size(data)
    if size and size[0] * size[1] > max_pixels:
        raise SkipFile(f"its header claims {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, above "
                       f"source.max_pixels ({max_pixels:,})")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
    except cv2.error as e:
        raise SkipFile(f"OpenCV cannot decode it ({str(e).strip().splitlines()[-1][:120]})") from None
    if img is None:
        raise SkipFile("not a decodable image (corrupt or unsupported format)", retry=True)
    try:
        return to_channels(img, channels)
    except ValueError as e:
        raise SkipFile(str(e)) from None
