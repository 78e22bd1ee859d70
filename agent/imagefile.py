"""Reading one image file from a scanner folder without trusting it: regular files only, a pixel
cap checked on the header before anything is decoded (PNG, JPEG, BMP, TIFF, WebP; anything whose
size cannot be read first is refused), and a completeness check (PNG's IEND chunk, JPEG's
end-of-image marker, TIFF strips within the file, WebP's and BMP's lengths) so a file still being
written is not taken half-done."""

from __future__ import annotations

import os
import stat
import struct

import cv2
import numpy as np

from ganomaly_edge.engine.preprocess import to_channels

from .errors import AgentError


class SkipFile(AgentError):
    """The file cannot be inspected; ``retry`` when it may still be being written."""

    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, either byte order
FORMATS = "PNG, JPEG, BMP, TIFF and WebP"


def image_format(data: bytes) -> str | None:
    """The format from the first bytes; None for anything this module cannot read a size from.
    OpenCV would decode more (JPEG 2000, PNM, EXR, ...), but an image whose size cannot be read
    before decoding is an image ``max_pixels`` cannot protect against."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in TIFF_MAGIC:
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, TIFF (the largest page) or WebP header; None when the
    header does not say (another format, or a damaged header)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] in TIFF_MAGIC:
        pages = _tiff_pages(data)
        sizes = [(p[256][0], p[257][0]) for p in pages if p.get(256) and p.get(257)]
        return max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
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


# TIFF field types -> (struct code, size): BYTE, SHORT, LONG, LONG8 (BigTIFF), IFD, IFD8
_TIFF_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4), 13: ("I", 4), 16: ("Q", 8), 18: ("Q", 8)}
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_TIFF_TAGS = (256, 257, 273, 279, 324, 325)  # width, height, strip offsets/byte counts, tile offsets/byte counts
MAX_TIFF_PAGES = 256


class _Truncated(AgentError):
    pass


def _tiff_pages(data: bytes, strict: bool = False) -> list[dict[int, list[int]]]:
    """The tags this module needs from every page (IFD) of a TIFF. A structure that points past the
    end of the data ends the walk; with ``strict`` it raises _Truncated instead."""
    e = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    pages: list[dict[int, list[int]]] = []
    try:
        off = struct.unpack_from(e + ("Q" if big else "I"), data, 8 if big else 4)[0]
        seen = set()
        while off and off not in seen and len(pages) < MAX_TIFF_PAGES:
            seen.add(off)
            n = struct.unpack_from(e + ("Q" if big else "H"), data, off)[0]
            entry, head = (20, 8) if big else (12, 2)
            if off + head + n * entry + (8 if big else 4) > len(data):
                raise struct.error("IFD past the end")
            tags: dict[int, list[int]] = {}
            for k in range(n):
                base = off + head + k * entry
                tag, typ = struct.unpack_from(e + "HH", data, base)
                count = struct.unpack_from(e + ("Q" if big else "I"), data, base + 4)[0]
                size = _TIFF_SIZES.get(typ, 1)
                where = base + (12 if big else 8)
                if count * size > (8 if big else 4):  # the values lie elsewhere: they must be in the file
                    where = struct.unpack_from(e + ("Q" if big else "I"), data, where)[0]
                if count > len(data) or where + count * size > len(data):
                    raise struct.error("values past the end")
                if tag in _TIFF_TAGS and typ in _TIFF_TYPES:
                    tags[tag] = list(struct.unpack_from(f"{e}{count}{_TIFF_TYPES[typ][0]}", data, where))
            pages.append(tags)
            off = struct.unpack_from(e + ("Q" if big else "I"), data, off + head + n * entry)[0]
    except struct.error:
        if strict:
            raise _Truncated() from None
    return pages


def _tiff_complete(data: bytes) -> bool:
    """Every page's header and every strip or tile of its image data lie within the file."""
    try:
        pages = _tiff_pages(data, strict=True)
    except _Truncated:
        return False
    if not pages:
        return False
    for p in pages:
        for offsets, counts in ((273, 279), (324, 325)):
            for o, c in zip(p.get(offsets, []), p.get(counts, [])):
                if o + c > len(data):
                    return False
    return True


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    try:
        if kind == b"VP8X":  # extended: the canvas, 24-bit width-1 and height-1
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
        if kind == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: a key frame's 14-bit sizes
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
    except (IndexError, struct.error):
        return None
    return None


def complete(data: bytes) -> bool:
    """False when a file visibly ends early (its writer may still be at work): PNG's IEND chunk,
    JPEG's end-of-image marker, every TIFF strip or tile within the file, WebP's RIFF length."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-16:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" in data[-64:]
    if data[:4] in TIFF_MAGIC:
        return _tiff_complete(data)
    if data[:4] == b"RIFF" and len(data) >= 12:
        return struct.unpack("<I", data[4:8])[0] + 8 <= len(data)
    if data[:2] == b"BM" and len(data) >= 6:
        return struct.unpack("<I", data[2:6])[0] <= len(data)
    return True


def read_image_file(path: str, channels: int, max_pixels: int, keep_depth: bool = False) -> np.ndarray:
    """BGR or grey uint8 image (uint16 for a 16-bit file with ``keep_depth``: an X-ray scanner's
    dynamic range goes through the camera's window later); SkipFile with the reason otherwise."""
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
    fmt = image_format(data)
    if fmt is None:
        if len(data) < 16:
            raise SkipFile("too short to be an image (perhaps still being written)", retry=True)
        raise SkipFile(f"not an image format whose size can be checked before decoding ({FORMATS} are): "
                       "convert it to one of those")
    if not complete(data):
        raise SkipFile(f"truncated ({fmt}: the file ends before its {'data' if fmt == 'TIFF' else 'end marker'})",
                       retry=True)
    size = header_size(data)
    if size is None:
        raise SkipFile(f"its {fmt} header gives no image size (damaged?)", retry=True)
    if size[0] * size[1] > max_pixels:
        raise SkipFile(f"its {fmt} header claims {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, above "
                       f"source.max_pixels ({max_pixels:,}); nothing was decoded")
    try:
        flags = (cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE) | (cv2.IMREAD_ANYDEPTH if keep_depth else 0)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise SkipFile(f"OpenCV cannot decode it ({str(e).strip().splitlines()[-1][:120]})") from None
    if img is None:
        raise SkipFile("not a decodable image (corrupt or unsupported format)", retry=True)
    try:
        return to_channels(img, channels, keep_depth)
    except ValueError as e:
        raise SkipFile(str(e)) from None
