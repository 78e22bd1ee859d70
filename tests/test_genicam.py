"""GenICam cameras through Aravis, against Aravis's own fake GigE Vision camera speaking the real
GVCP/GVSP protocol on loopback (arv-fake-gv-camera-0.8, Debian's aravis-tools), with a real
mosquitto and the agent as a process: results for the frames it receives, the camera killed and
restarted, and the bad inputs (an unknown device id, a pixel format the model cannot take)."""

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from support.agent import start_agent, stop, write_config
from support.plant import PREFIX, check_results, plant, subscriber, wait

FAKE = shutil.which("arv-fake-gv-camera-0.8")
DEVICE = "Aravis-Fake-GV01"


def _aravis_or_skip():
    from ganomaly_edge.agent.genicam import aravis

    try:
        return aravis()
    except ImportError as e:
        pytest.skip(str(e))


class FakeCamera:
    def __init__(self):
        self.proc = None

    def start(self):
        from ganomaly_edge.agent.genicam import device_ids

        self.proc = subprocess.Popen([FAKE, "-i", "127.0.0.1", "-s", "GV01"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait(lambda: DEVICE in device_ids(), 30), "the fake camera did not show up"
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fake_camera():
    _aravis_or_skip()
    if FAKE is None:
        pytest.skip("arv-fake-gv-camera-0.8 is not installed (apt install aravis-tools; make setup does this)")
    cam = FakeCamera().start()
    yield cam
    cam.kill()


def genicam_config(tmp_path, bundle, port, uri=DEVICE, cam_extra='[cameras.items]\ntrigger = "mqtt"\ntimeout_s = 2.0\n',
                   cam_keys=""):
    return write_config(tmp_path / "a.toml", port, {"kind": "genicam", "uri": uri, "stall_timeout_s": 3.0},
                        tmp_path / "ev.db", **plant(bundle=bundle, camera_tables=cam_extra, camera_keys=cam_keys))


def trigger(sub, payload):
    sub.publish(f"{PREFIX}/cam1/trigger", payload)


def test_triggered_items_on_the_fake_gige_camera_survive_it_being_killed_and_restarted(
        fake_camera, broker, tiny_bundle, tmp_path):
    sub = subscriber(broker.port)
    p = start_agent(genicam_config(tmp_path, tiny_bundle, broker.port), tmp_path / "agent.log")
    try:
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "online", 60), open(tmp_path / "agent.log").read()
        for i in range(5):
            trigger(sub, f"SN-{i}")
            time.sleep(0.3)
        assert wait(lambda: len(sub.results()) >= 5, 60), open(tmp_path / "agent.log").read()
        got = sub.results()
        assert [r["item"] for r in got] == [f"SN-{i}" for i in range(5)]
        assert all(r["score"] is not None and r["error"] is None and r["latency_ms"] >= 0 for r in got)
        assert [r["seq"] for r in got] == list(range(5))

        fake_camera.kill()  # the camera vanishes: a part triggered now still gets a verdict
        time.sleep(0.5)  # its last frames delivered (frames are timed by arrival, a trigger takes a later one)
        trigger(sub, "LOST-1")
        assert wait(lambda: len(sub.results()) >= 6, 60)
        lost = sub.results()[5]
        assert lost["item"] == "LOST-1" and lost["ok"] is False and lost["score"] is None
        assert "no frame within" in lost["error"]
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "offline", 60)

        fake_camera.start()
        assert wait(lambda: sub.stats("cam1").get("reconnects", 0) >= 1, 90), open(tmp_path / "agent.log").read()
        assert wait(lambda: sub.last(f"{PREFIX}/cam1/status") == "online", 30)
        trigger(sub, "BACK-1")
        assert wait(lambda: len(sub.results()) >= 7, 60)
        back = sub.results()[6]
        assert back["item"] == "BACK-1" and back["score"] is not None and back["error"] is None
        check_results(sub.results())
        assert wait(lambda: sub.stats("cam1").get("results") == 7, 30)  # stats are periodic
        st = sub.stats("cam1")
        assert st["missed_triggers"] >= 1 and st["triggers"] == 7
    finally:
        assert stop(p) == 0
        sub.close()


def test_every_frame_an_item_in_mono16_through_a_window(fake_camera, broker, tiny_bundle, tmp_path):
    """items.trigger = "camera": the camera's own trigger makes every frame a part; Mono16 frames go
    through the camera's window onto the model's 8 bits."""
    extra = '[cameras.genicam]\npixel_format = "Mono16"\nframe_rate = 5.0\n[cameras.items]\ntrigger = "camera"\n'
    sub = subscriber(broker.port)
    p = start_agent(genicam_config(tmp_path, tiny_bundle, broker.port, cam_extra=extra, cam_keys='window = "p1:p99"'),
                    tmp_path / "agent.log")
    try:
        assert wait(lambda: len(sub.results()) >= 4, 90), open(tmp_path / "agent.log").read()
    finally:
        assert stop(p) == 0
        sub.close()
    got = sub.results()
    check_results(got)
    assert [r["seq"] for r in got] == list(range(len(got)))
    assert len({r["item"] for r in got}) == len(got) and all(r["item"].startswith("cam1-") for r in got)
    assert "Mono16" in open(tmp_path / "agent.log").read()


def test_an_unknown_device_id_is_said_and_its_parts_still_get_a_verdict(broker, tiny_bundle, tmp_path):
    _aravis_or_skip()
    sub = subscriber(broker.port)
    p = start_agent(genicam_config(tmp_path, tiny_bundle, broker.port, uri="No-Such-Camera"), tmp_path / "agent.log")
    try:
        reason = f"{PREFIX}/cam1/status/reason"
        assert wait(lambda: "No-Such-Camera" in (sub.last(reason) or ""), 60), open(tmp_path / "agent.log").read()
        assert "cameras found" in sub.last(reason) and "source.uri" in sub.last(reason)
        trigger(sub, "SN-9")
        assert wait(lambda: sub.results(), 30)
        r = sub.results()[0]
        assert r["item"] == "SN-9" and r["ok"] is False and "no frame within" in r["error"]
        assert p.poll() is None  # the agent goes on, retrying the camera
    finally:
        assert stop(p) == 0
        sub.close()


def test_a_pixel_format_the_model_cannot_take_stops_at_start_with_the_list(tiny_bundle, tmp_path):
    cfg = write_config(tmp_path / "a.toml", 1883, {"kind": "genicam", "uri": DEVICE}, tmp_path / "ev.db",
                       **plant(bundle=tiny_bundle, camera_tables='[cameras.genicam]\npixel_format = "YUV422_8"\n'))
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, "--check-config"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "YUV422_8" in r.stderr and "cannot feed the model" in r.stderr and "Mono16" in r.stderr


def test_a_pixel_format_the_camera_does_not_offer_is_said_with_what_it_offers(fake_camera, broker, tiny_bundle,
                                                                               tmp_path):
    extra = '[cameras.genicam]\npixel_format = "Mono12"\n'
    sub = subscriber(broker.port)
    p = start_agent(genicam_config(tmp_path, tiny_bundle, broker.port, cam_extra=extra), tmp_path / "agent.log")
    try:
        reason = f"{PREFIX}/cam1/status/reason"
        assert wait(lambda: "does not offer pixel format Mono12" in (sub.last(reason) or ""), 60), \
            open(tmp_path / "agent.log").read()
        assert "Mono16" in sub.last(reason) and "genicam.pixel_format" in sub.last(reason)
    finally:
        assert stop(p) == 0
        sub.close()


def test_buffers_become_images():
    from ganomaly_edge.agent.genicam import to_image
    from ganomaly_edge.agent.sources import SourceError

    mono12 = np.array([[0, 4095], [2048, 1]], np.uint16)
    img = to_image(mono12.tobytes(), 2, 2, "Mono12")
    assert img.dtype == np.uint16 and img[0, 1, 0] == 4095 << 4  # in 16-bit units, as every window
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    assert to_image(rgb.tobytes(), 2, 2, "RGB8")[0, 0].tolist() == [0, 0, 200]  # BGR
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255  # a red scene under an RGGB filter: only the red sites are lit
    bgr = to_image(mosaic.tobytes(), 8, 8, "BayerRG8")
    assert bgr.shape == (8, 8, 3) and bgr[4, 4, 2] > 200 and bgr[4, 4, 0] < 50 and bgr[4, 4, 1] < 50
    with pytest.raises(SourceError, match="packed format"):
        to_image(b"\0" * 6, 2, 2, "Mono12")


def test_without_aravis_the_error_says_what_to_install():
    code = ("import sys; sys.modules['gi'] = None\n"
            "from ganomaly_edge.agent.genicam import aravis\n"
            "try:\n    aravis()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install 'ganomaly-edge[genicam]'" in out and "gir1.2-aravis-0.8" in out


def test_buffers_are_reused_and_never_leak_under_a_stall(fake_camera):
    """A reader that stops reading (inference behind) lets the camera fill every buffer; reading on
    takes them back: the stream's buffers stay the configured ones, none allocated or lost."""
    from ganomaly_edge.agent.config import GenicamConfig, SourceConfig
    from ganomaly_edge.agent.genicam import GenicamSource

    src = GenicamSource(SourceConfig(kind="genicam", uri=DEVICE), GenicamConfig(buffers=4))
    try:
        assert tuple(src.stream.get_n_buffers()) == (4, 0)
        assert wait(lambda: tuple(src.stream.get_n_buffers()) == (0, 4), 30)  # the stall: all filled, none read
        frames = []
        deadline = time.monotonic() + 60
        while len(frames) < 12 and time.monotonic() < deadline:
            f = src.read()
            if f is not None:
                frames.append(f)
        assert len(frames) == 12 and frames[0].image.shape == (512, 512, 1)
        n_in, n_out = src.stream.get_n_buffers()
        assert n_in + n_out == 4  # every popped buffer went back
    finally:
        src.close()
