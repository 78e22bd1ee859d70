"""A private mosquitto broker on a free loopback port, for the demo and the tests."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, port: int | None = None, persistence: bool = True, workdir: str | None = None,
                 extra: str = "", autosave: str = "autosave_interval 1"):
        self.exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if not self.exe:
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto (make setup does this)")
        self.port = port or free_port()
        self.dir = workdir or tempfile.mkdtemp(prefix="mosquitto-")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            # Started as root, mosquitto drops to the user "mosquitto", which cannot write this
            # directory: every save of the persistence file failed ("Permission denied"), and a
            # restart lost the sessions and queued messages. It runs as whoever starts it instead.
            f.write(f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                    f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistence {'true' if persistence else 'false'}\npersistence_location {self.dir}/\n"
                    f"{autosave}\nlog_dest stderr\nlog_type error\nlog_type warning\n{extra}")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "broker.log"), "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start; see {self.dir}/broker.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """kill -9: no chance to save anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
