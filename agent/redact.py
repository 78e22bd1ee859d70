"""Credentials never leave the process. Camera URIs carry them (``rtsp://user:password@cam/...``,
``http://cam/video?user=admin&pwd=...``, GStreamer's ``rtspsrc ... user-pw=...``), and a URI turns up
in error messages, which go to the journal, the retained status topics every subscriber can read,
the stats and ``--print-config``. Each of those channels passes its text through ``redact``.

Two layers: patterns for the usual places of a credential in a URI or pipeline, and the literal
secrets the configuration holds (``remember``), so a password also goes if it turns up elsewhere
(percent-decoded by a library, say)."""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host (the password may hold '@': up to the last one
# before the path)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]*):(?P<pw>[^\s/'\"]*)@")
# key=value pairs that hold a secret: query strings, GStreamer element properties
_PAIRS = re.compile(r"(?i)(?P<key>\b(?:user-pw|proxy-pw|password|passwd|pwd|pass|pw|passphrase|secret|token|"
                    r"access_token|api_key|apikey|auth)\s*=\s*)(?P<val>\"[^\"]*\"|'[^']*'|[^\s&;!,]+)")

_secrets: set[str] = set()
_lock = threading.Lock()


def remember(secret: str | None) -> None:
    """A literal secret (a password) to mask wherever it appears, as written and percent-decoded."""
    if not secret or len(secret) < 3 or secret == MASK:
        return
    with _lock:
        _secrets.add(secret)
        decoded = unquote(secret)
        if decoded != secret and len(decoded) >= 3:
            _secrets.add(decoded)


def remember_uri(uri: str) -> None:
    """The credentials written into a URI or pipeline string."""
    for m in _USERINFO.finditer(uri):
        remember(m.group("pw"))
    for m in _PAIRS.finditer(uri):
        remember(m.group("val").strip("\"'"))


def redact(text):
    """``text`` with every credential masked; anything but a str is returned as it is."""
    if not isinstance(text, str) or not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _PAIRS.sub(lambda m: f"{m.group('key')}{MASK}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter: the whole formatted record (message, arguments, traceback) is redacted."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))
