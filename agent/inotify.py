"""New files in a folder tree from Linux inotify, through ctypes (no dependency; JetPack's Python
has none to spare). A poll costs one non-blocking read, whatever the folder holds; the folder
source falls back to listing when inotify is unavailable (another OS, NFS, too many watches) or
its queue overflowed."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct

from .errors import AgentError

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x008, 0x080, 0x100
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")


class Unavailable(AgentError, OSError):
    pass


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        raise Unavailable("no C library found")
    libc = ctypes.CDLL(name, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise Unavailable("this system has no inotify")
    return libc


class Watch:
    """Paths created, closed after writing or moved in under ``root`` (subfolders included)."""

    def __init__(self, root: str):
        self.libc = _libc()
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise Unavailable(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.dirs: dict[int, str] = {}
        self.overflowed = False
        for dirpath, dirnames, _ in os.walk(root):
            self._add(dirpath)

    def _add(self, path: str) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise Unavailable(f"cannot watch {path}: {os.strerror(err)}"
                              + (" (raise fs.inotify.max_user_watches)" if err == errno.ENOSPC else ""))
        self.dirs[wd] = path

    def poll(self, timeout: float) -> list[str]:
        """Paths with news since the last poll (waits up to ``timeout`` for the first). After a queue
        overflow ``overflowed`` is set: the caller must list the folder once to catch up."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, i)
            name = data[i + _EVENT.size:i + _EVENT.size + length].split(b"\0", 1)[0]
            i += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.overflowed = True
                continue
            base = self.dirs.get(wd)
            if base is None or not name:
                continue
            path = os.path.join(base, os.fsdecode(name))
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._add(path)
                    self.overflowed = True  # files may have landed in it before the watch: list once
                continue
            out.append(path)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
