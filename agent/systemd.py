"""sd_notify without dependencies: READY, WATCHDOG, STOPPING, STATUS for Type=notify units."""

from __future__ import annotations

import os
import socket

from .redact import redact


def notify(state: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(redact(state).encode())  # STATUS= lines reach systemctl status and the journal
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2e6 if usec and usec.isdigit() else None
