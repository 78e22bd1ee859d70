"""The test's side of the fake libgpiod (``fakes/libgpiod/gpiod``): chips it plugs in and unplugs,
edges it drives on their lines, and the environment that makes the agent's process import the
fake as ``gpiod``. What the fake models and how: fakes/libgpiod/gpiod/_ext.py."""

import json
import os
import sys

FAKE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libgpiod")


class FakeGpio:
    """GPIO chips under ``folder``: each a file (the chip's device and its wire), described in
    ``folder/gpio.json``, which the fake reads through $GPIOD_FAKE_STATE."""

    def __init__(self, folder):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.state = os.path.join(self.folder, "gpio.json")
        self.chips: dict[str, dict] = {}
        self._save()

    def _save(self):
        with open(self.state, "w") as f:
            json.dump({"chips": self.chips}, f)

    def add_chip(self, name="gpiochip0", label="fake-gpio", lines=8, used=None) -> str:
        """A chip of ``lines`` lines (a count: unnamed; or a list of names, "" for none), ``used``
        {offset: consumer} held by other programs; plugged in. Its path."""
        path = os.path.join(self.folder, name)
        names = [""] * lines if isinstance(lines, int) else list(lines)
        self.chips[path] = {"name": name, "label": label, "lines": names,
                            "used": {str(k): v for k, v in (used or {}).items()}}
        self._save()
        self.plug(path)
        return path

    def plug(self, path):
        open(path, "w").close()

    def unplug(self, path):
        os.remove(path)

    def drive(self, path, offset, what, count=None):
        """``what`` on a pin: "rising", "falling" or "pulse" (``count`` of them at once: a burst the
        kernel sees before anyone can read)."""
        with open(path, "a") as f:
            f.write(f"{offset} {what}{'' if count is None else f' {count}'}\n")

    def pulse(self, path, offset, count=None):
        self.drive(path, offset, "pulse", count)

    def env(self, base=None) -> dict:
        """An environment for the agent's process: the fake first on PYTHONPATH, its state named."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join([FAKE_PATH] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p])
        env["GPIOD_FAKE_STATE"] = self.state
        return env

    def install(self, monkeypatch):
        """The fake as ``gpiod`` in this process (for in-process tests); ``forget_gpiod()`` after."""
        monkeypatch.setenv("GPIOD_FAKE_STATE", self.state)
        monkeypatch.syspath_prepend(FAKE_PATH)
        forget_gpiod()
        import gpiod

        assert gpiod.__file__.startswith(FAKE_PATH), gpiod.__file__
        return gpiod


def forget_gpiod():
    """Drop every ``gpiod`` module this process imported (the fake's), so the next import looks anew."""
    for name in [m for m in sys.modules if m == "gpiod" or m.startswith("gpiod.")]:
        del sys.modules[name]
