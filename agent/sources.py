"""Frame sources: camera index, video file, RTSP/HTTP URL, GStreamer pipeline, image folder.

``open_source`` returns an object with ``read() -> Frame | None`` (None: nothing now, try again),
raising ``SourceEnded`` when a finite source is done and ``SourceError`` when it failed and must
be reopened. Supervision (stalls, paced reopening) lives in the pipeline.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np

from . import inotify
from .config import SourceConfig
from .errors import AgentError
from .imagefile import SkipFile, read_image_file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SourceError(AgentError, RuntimeError):
    """The source failed (cannot open, read error, vanished); the supervisor reopens it."""


class SourceEnded(AgentError):
    """A finite source (file without loop, folder without watch) has delivered everything."""


@dataclass
class Frame:
    image: np.ndarray  # BGR or grey, as read
    index: int
    ts: float  # wall-clock capture time (time.time())
    mono: float  # monotonic capture time, for latency
    name: str = ""  # file name for folder items
    t_media: float = 0.0  # stream time for decisions: the video position for files, else monotonic
    path: str = ""  # folder items: the file, recorded as processed once decided
    stamp: str = ""  # folder items: size:mtime_ns of the version read (a rewritten file is a new item)
    item: str = ""  # item mode: the item's id (the trigger's payload, or generated)
    t0: float = 0.0  # item mode: monotonic time of the trigger, for the result's latency (0: ``mono``)


class VideoSource:
    """OpenCV VideoCapture for camera indices, files, URLs and GStreamer pipelines."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.index = 0
        self.skipped = 0  # a video has no unreadable items to skip (folders do)
        self._next_due = None
        self._last_pos = -1.0
        self._loop_offset = 0.0
        if cfg.kind == "camera":
            try:
                target: int | str = int(cfg.uri)
            except ValueError:
                target = cfg.uri  # e.g. /dev/video2
            self.cap = cv2.VideoCapture(target)
        elif cfg.kind == "gstreamer":
            self.cap = cv2.VideoCapture(cfg.uri, cv2.CAP_GSTREAMER)
        elif cfg.kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.stall_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.stall_timeout_s * 1000)]
            self.cap = cv2.VideoCapture(cfg.uri, cv2.CAP_FFMPEG, params)
        else:
            if not os.path.exists(cfg.uri):
                raise SourceError(f"video file {cfg.uri!r} does not exist")
            self.cap = cv2.VideoCapture(cfg.uri)
        if not self.cap.isOpened():
            hint = {"gstreamer": " (is OpenCV built with GStreamer? pip's opencv-python is not; use the "
                                 "system OpenCV on a Jetson)",
                    "camera": " (is the camera connected and not used by another process?)"}.get(cfg.kind, "")
            raise SourceError(f"cannot open {cfg.kind} source {cfg.uri!r}{hint}")
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._frame_dt = 1.0 / fps if fps > 0 else 0.04

    def read(self) -> Frame | None:
        if self.cfg.fps and self.cfg.kind == "file":
            now = time.monotonic()
            if self._next_due is None:
                self._next_due = now
            if now < self._next_due:
                time.sleep(self._next_due - now)
            self._next_due += 1.0 / self.cfg.fps
        ok, img = self.cap.read()
        if not ok or img is None:
            if self.cfg.kind == "file":
                if self.cfg.loop and self.index > 0:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, img = self.cap.read()
                if not ok or img is None:
                    if self.index == 0:
                        raise SourceError(f"video file {self.cfg.uri!r} has no readable frames")
                    raise SourceEnded()
            else:
                raise SourceError(f"{self.cfg.kind} source {self.cfg.uri!r} returned no frame")
        mono = time.monotonic()
        t_media = mono
        if self.cfg.kind == "file":
            # Decisions (debounce, cooldown) follow the video's own clock, however fast it is read.
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if pos < self._last_pos:
                self._loop_offset += self._last_pos + self._frame_dt
            self._last_pos = pos
            t_media = self._loop_offset + pos
        frame = Frame(img, self.index, time.time(), mono, t_media=t_media)
        self.index += 1
        return frame

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    """Every image in a folder, oldest name first, each exactly once; new files as they arrive.

    The scanner case: an item is one image, never dropped. A file is taken once its size and
    modification time have stayed unchanged for ``settle_s`` (a writer may still be copying it);
    one that still reads as incomplete is tried again while it changes, up to RETRIES times. Every
    file that cannot be inspected (permission, vanished, not a regular file, too many pixels,
    corrupt) is skipped, counted and logged once; nothing a file does stops the source.

    New files are found by inotify: a poll costs one non-blocking read however many files the
    folder has processed. The folder is listed in full only at the start, after an inotify queue
    overflow or a new subfolder, and every ``rescan_s`` as a fallback (files inotify cannot see,
    e.g. written over NFS). Without inotify it is polled; a directory is then listed again only
    when its own modification time changes, so a quiet folder costs one stat per poll, and in full
    every ``rescan_s`` (a file rewritten in place does not change its directory).

    An item is what a file is, not its name: path, size and modification time (``stamp``). A
    scanner that writes ``scan.png`` again (in place, or deleted and written anew) makes a new
    item. A folder that suddenly lists no images while processed ones were there (a share that
    dropped, an empty mount point) is said and its records are kept, so the same files coming back
    are not new; they are forgotten once other files appear without them.
    """

    RETRIES = 5

    def __init__(self, cfg: SourceConfig, seen: dict[str, str] | None = None, record=None):
        if not os.path.isdir(cfg.uri):
            raise SourceError(f"image folder {cfg.uri!r} does not exist or is not a folder")
        self.cfg = cfg
        self.seen: dict[str, str] = seen if seen is not None else {}  # path -> stamp of the version taken
        self.record = record  # durable: files processed before a restart are not inspected again
        if record is not None:
            self.seen.update(record.paths())
        self.before = dict(self.seen)  # processed before this source opened (by an earlier run, too)
        self.not_new: set[str] = set()  # of those, the ones listed again unchanged
        self.emptied = False  # the folder listed no images while processed ones were there
        self.pending: list[str] = []
        self.waiting: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, unchanged since)
        self.attempts: dict[str, int] = {}
        self.dir_mtimes: dict[str, int] = {}
        self.index = len(self.seen)
        self.skipped = 0
        self.scans = 0  # directory listings, for the cost figures
        self.listed: set[str] = set()
        self._last_scan = 0.0
        self.events = None
        self.next_listing = 0.0
        self.identity = self._identity()
        if cfg.watch:
            self._watch()

    def _watch(self) -> None:
        try:
            self.events = inotify.Watch(self.cfg.uri)
        except inotify.Unavailable as e:
            log.info("folder %s: no inotify (%s): polling every %.1f s", self.cfg.uri, e, self.cfg.poll_interval_s)

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.cfg.uri)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _new(self, path: str, stamp: str | None) -> bool:
        """Whether ``path`` is an item not taken yet: never seen, or seen with another size or mtime
        (an empty or unknown stamp, e.g. a record from before stamps, matches anything)."""
        if path in self.waiting:
            return False
        old = self.seen.get(path)
        return old is None or bool(old and stamp and old != stamp)

    def _list(self, root: str, out: list[str]) -> None:
        """New image paths under ``root``; only directories whose mtime changed are listed."""
        try:
            mtime = os.stat(root).st_mtime_ns
        except OSError:
            return
        changed = self.dir_mtimes.get(root) != mtime
        self.dir_mtimes[root] = mtime
        try:
            entries = list(os.scandir(root)) if changed else []
        except OSError as e:
            log.warning("cannot list %s: %s", root, e)
            return
        if changed:
            self.scans += 1
            self.listed.update(e.path for e in entries)
        subdirs = [d for d in self.dir_mtimes if os.path.dirname(d) == root and d != root]
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.path)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                if self._new(e.path, _entry_stamp(e) if e.path in self.seen else None):
                    out.append(e.path)
                elif e.path in self.before and e.path not in self.waiting:
                    self.not_new.add(e.path)
        for d in sorted(set(subdirs)):
            self._list(d, out)

    def _discover(self, now: float) -> list[str]:
        """New image paths: from inotify when it is live, else (or when due) by listing."""
        found: list[str] = []
        identity = self._identity()
        if identity != self.identity and identity is not None:
            # Another directory under the same path: a share mounted or unmounted over it. Its
            # inotify watch belongs to the old one; watch the new one and list it in full.
            log.warning("folder %s is now another directory (a share mounted or unmounted?): watching it anew",
                        self.cfg.uri)
            self.identity = identity
            if self.events is not None:
                self.events.close()
                self.events = None
                self._watch()
            self.dir_mtimes.clear()
            self.next_listing = 0.0
        if self.events is None and now >= self.next_listing:
            # Polling: a file rewritten in place leaves its directory's mtime alone, so every
            # rescan_s everything is listed (and each processed file's size and mtime compared).
            self.dir_mtimes.clear()
            self.next_listing = now + self.cfg.rescan_s
        if self.events is None or self.events.overflowed or now >= self.next_listing:
            full = not self.dir_mtimes
            if self.events is not None:
                self.events.overflowed = False
                self.dir_mtimes.clear()  # a fallback listing lists everything
                self.next_listing = now + self.cfg.rescan_s
                full = True
            self.listed = set()
            self._list(self.cfg.uri, found)
            if full:
                self._forget_gone()
        if self.events is not None:
            found += [p for p in dict.fromkeys(self.events.poll(0)) if p.lower().endswith(IMAGE_EXTENSIONS)
                      and p not in found and self._new(p, _stamp(p) if p in self.seen else None)]
        return found

    def _scan(self) -> None:
        now = time.monotonic()
        for p in self._discover(now):
            self.waiting[p] = (-1, -1, now)
        ready = []
        for p, (size, mtime, since) in list(self.waiting.items()):
            try:
                st = os.stat(p)
            except OSError as e:  # gone (or unreachable) before it was read: said and counted
                del self.waiting[p]
                self._skip(p, "it vanished before it could be read" if isinstance(e, FileNotFoundError)
                           else f"cannot stat it ({e.strerror})")
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self.waiting[p] = (st.st_size, st.st_mtime_ns, now)
                if self.cfg.watch:
                    continue
            elif self.cfg.watch and now - since < self.cfg.settle_s:
                continue
            ready.append(p)
        for p in sorted(ready):
            del self.waiting[p]
        self.pending.extend(sorted(ready))
        self._last_scan = now

    def read(self) -> Frame | None:
        while True:
            if not self.pending:
                if not os.path.isdir(self.cfg.uri):
                    raise SourceError(f"image folder {self.cfg.uri!r} has vanished")
                wait = self.cfg.poll_interval_s - (time.monotonic() - self._last_scan)
                if wait > 0 and (self.cfg.watch or self.waiting):
                    time.sleep(min(wait, 0.1))
                    return None
                self._scan()
                if not self.pending:
                    if not self.cfg.watch and not self.waiting:
                        self._say_what_was_not_new()
                        raise SourceEnded()
                    return None
            path = self.pending.pop(0)
            img = self._inspect(path)
            if img is None:
                continue
            mono = time.monotonic()
            frame = Frame(img, self.index, time.time(), mono, name=os.path.relpath(path, self.cfg.uri), t_media=mono,
                          path=path, stamp=self.seen.get(path, ""))
            self.index += 1
            return frame

    def _say_what_was_not_new(self) -> None:
        """At the end of a folder: how many of its images were processed before (by an earlier run:
        the event store records them) and so not inspected again, and how to have them inspected."""
        before = sum(1 for p in self.not_new if self.before[p] == self.seen.get(p))
        if not before:
            return
        new = self.index - len(self.before)
        (log.warning if new <= 0 else log.info)(
            "folder %s: %d image(s) were already processed (recorded in the event store, store.path) and were not "
            "inspected again; %d new. To inspect a file again, touch it (a new modification time makes a new item) "
            "or copy it under a new name", self.cfg.uri, before, max(new, 0))

    def _inspect(self, path: str) -> np.ndarray | None:
        stamp = _stamp(path) or ""  # of the version about to be read: a later rewrite is a new item
        try:
            img = read_image_file(path, 3, self.cfg.max_pixels, keep_depth=True)
        except SkipFile as e:
            tries = self.attempts.get(path, 0) + 1
            if e.retry and tries < self.RETRIES and os.path.exists(path):
                self.attempts[path] = tries  # perhaps still being written: wait for it to settle again
                self.waiting[path] = (-1, -1, time.monotonic())
                return None
            self.attempts.pop(path, None)
            self._skip(path, e.reason)
            return None
        self.attempts.pop(path, None)
        self.seen[path] = stamp
        return img

    def _forget_gone(self) -> None:
        """Files processed earlier and no longer in the folder are dropped from memory and record,
        unless the folder lists no images at all: a share that dropped or an empty mount point
        looks like that, and its files coming back must not be new items."""
        gone = [p for p in self.seen if p not in self.listed]
        if not gone:
            self.emptied = False
            return
        if not any(p.lower().endswith(IMAGE_EXTENSIONS) for p in self.listed):
            if not self.emptied:
                self.emptied = True
                log.warning("folder %s lists no images although %d processed file(s) were there: an unmounted "
                            "share or an empty mount point? Their records are kept, so the same files coming back "
                            "are not inspected again (they are forgotten once other files appear without them)",
                            self.cfg.uri, len(gone))
            return
        if self.emptied:
            log.info("folder %s lists images again", self.cfg.uri)
        self.emptied = False
        for p in gone:
            self.seen.pop(p, None)
        if self.record is not None:
            self.record.forget(gone)

    def _skip(self, path: str, reason: str) -> None:
        stamp = _stamp(path) or "gone"  # a file written under that name later is a new item
        self.seen[path] = stamp
        self.skipped += 1
        log.warning("skipping %s: %s", path, reason)
        if self.record is not None:
            self.record.mark(path, "skipped", stamp)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None


class FolderRecord:
    """The durable record of a folder's processed files, in the event store."""

    def __init__(self, store, camera: str, folder: str):
        self.store, self.source = store, f"{camera}:{os.path.abspath(folder)}"

    def paths(self) -> dict[str, str]:
        """path -> stamp (size:mtime_ns) of every processed file."""
        return self.store.processed_paths(self.source)

    def mark(self, path: str, status: str, stamp: str = "") -> None:
        self.store.mark_processed(self.source, path, status, stamp)

    def forget(self, paths: list[str]) -> None:
        self.store.forget_processed(self.source, paths)


def _stamp(path: str) -> str | None:
    """What identifies a version of a file: its size and modification time (ns); None if gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _entry_stamp(entry: os.DirEntry) -> str | None:
    try:
        st = entry.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def open_source(cfg: SourceConfig, folder_seen: dict[str, str] | None = None, record: FolderRecord | None = None,
                genicam=None):
    if cfg.kind == "folder":
        return FolderSource(cfg, folder_seen, record)
    if cfg.kind == "genicam":
        from .genicam import GenicamSource

        return GenicamSource(cfg, genicam)
    return VideoSource(cfg)
