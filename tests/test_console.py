"""The console (agent/console.py) against real parts: the agent as a process on an image folder and
a video file, a real mosquitto on loopback, the alarm history on real SQLite and files, HTTP over
a real socket, /metrics read by prometheus_client's parser, and the review page in a real
headless chromium driven by selenium."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from support.agent import ALARM_ON_EVERY_ITEM, Subscriber, start_agent, wait, write_config

TOKEN = "s3cret-token-for-tests-0123456789"


def free_port():
    from ganomaly_edge.tools.broker import free_port as fp

    return fp()




def http(port, path, token=TOKEN, method="GET", body=None, headers=None, raw=False):
    """(status, headers, body: parsed JSON unless raw) of one request."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    if raw:
        return status, hdrs, data
    try:
        return status, hdrs, json.loads(data)
    except ValueError:
        return status, hdrs, data


def make_inputs(tmp):
    """A folder of 6 real photographs (scikit-image) and a 10-frame video of real digits."""
    from skimage import data as skd
    from sklearn.datasets import load_digits

    os.makedirs(tmp / "scans")
    for i, name in enumerate(["brick", "grass", "gravel", "camera", "moon", "coins"]):
        img = getattr(skd, name)()
        img = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(tmp / "scans" / f"item_{i}.png"), cv2.resize(img, (96, 80)))
    video = str(tmp / "belt.avi")
    vw = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    digits = load_digits().images
    for i in range(10):
        g = cv2.resize((digits[i] * 15).astype(np.uint8), (48, 40), interpolation=cv2.INTER_NEAREST)
        vw.write(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
    vw.release()
    return str(tmp / "scans"), video


def line_config(tmp, broker_port, http_port, scans, video, history_extra=""):
    """The line's agent.toml (support.agent.write_config): the console and history on, a folder
    camera ("scanner") and a video camera ("belt"), every frame alarming."""
    (tmp / "token").write_text(TOKEN + "\n")
    sections = (f'[history]\npath = "{tmp / "history"}"\n{history_extra}\n'
                f'[http]\nlisten = "127.0.0.1:{http_port}"\ntoken_file = "{tmp / "token"}"\n')
    belt = (f'[[cameras]]\nname = "belt"\n[cameras.source]\nkind = "file"\nuri = "{video}"\n'
            f'[cameras.decision]\n{ALARM_ON_EVERY_ITEM}\n')
    return write_config(tmp / "agent.toml", broker_port, {"kind": "folder", "uri": scans, "settle_s": 0.2},
                        tmp / "events.db", device_id="line1", prefix="ganomaly/line1", stats_interval_s=2,
                        retry_s=None, results=None, roi="x = 8, y = 4, w = 64, h = 72", camera_keys="rotate = 90",
                        sections=sections, camera_tables=belt)


def stop(p):
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 0


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """The agent on a folder (6 items) and a video (10 frames) where every frame alarms: 16 alarms."""
    from ganomaly_edge.tools.broker import Mosquitto

    tmp = tmp_path_factory.mktemp("console")
    broker = Mosquitto(workdir=str(tmp / "broker")).start()
    scans, video = make_inputs(tmp)
    port = free_port()
    cfg = line_config(tmp, broker.port, port, scans, video)
    sub = Subscriber(broker.port, "ganomaly/line1", client_id="console-sub")
    log = str(tmp / "agent.log")
    p = start_agent(cfg, log)
    ok = wait(lambda: http(port, "/api/alarms?limit=1000")[2]["count"] == 16
              if p.poll() is None and _up(port) else p.poll() is not None, 120)
    assert ok and p.poll() is None, open(log).read()
    state = {"tmp": tmp, "port": port, "sub": sub, "cfg": cfg, "log": log, "proc": p, "broker": broker}
    yield state
    if state["proc"].poll() is None:
        stop(state["proc"])
    sub.close()
    broker.stop()


def _up(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_alarms_are_kept_with_their_frames_and_listed(line):
    port = line["port"]
    st, _, body = http(port, "/api/alarms?limit=1000")
    alarms = body["alarms"]
    assert st == 200 and len(alarms) == 16
    assert [a["ts"] for a in alarms] == sorted((a["ts"] for a in alarms), reverse=True)  # newest first
    for a in alarms:
        assert {"id", "camera", "ts", "score", "item", "verdict", "model"} <= set(a)
        assert a["verdict"] is None and a["model"]["name"] and len(a["model"]["hash"]) >= 8
    scanner = [a for a in alarms if a["camera"] == "scanner"]
    assert sorted(a["item"] for a in scanner) == [f"item_{i}.png" for i in range(6)]
    assert len(http(port, "/api/alarms?camera=belt&limit=1000")[2]["alarms"]) == 10
    # The frame as the model saw it: the ROI (64x72), turned 90 degrees, not resized; lossless.
    a = scanner[0]
    st, hdr, png = http(port, f"/api/alarms/{a['id']}/images/frame", raw=True)
    assert st == 200 and hdr["content-type"] == "image/png"
    frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    src = cv2.imread(os.path.join(str(line["tmp"] / "scans"), a["item"]), cv2.IMREAD_COLOR)  # as the agent reads it
    want = cv2.rotate(src[4:76, 8:72], cv2.ROTATE_90_CLOCKWISE)
    assert frame.shape[:2] == (64, 72) and np.array_equal(frame, want)
    detail = http(port, f"/api/alarms/{a['id']}")[2]
    assert set(detail["images"]) >= {"frame", "overlay", "crop-0"}
    for url in detail["images"].values():
        st, hdr, data = http(port, url, raw=True)
        assert st == 200 and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    for root, dirs, files in os.walk(line["tmp"] / "history"):
        for f in files:
            assert os.stat(os.path.join(root, f)).st_mode & 0o077 == 0, f


def test_every_endpoint_but_metrics_and_healthz_needs_the_token(line):
    port = line["port"]
    some = http(port, "/api/alarms?limit=1")[2]["alarms"][0]["id"]
    for path in ("/api/alarms", f"/api/alarms/{some}", f"/api/alarms/{some}/images/frame", "/api/status"):
        for token in (None, "wrong-token-123"):
            st, hdr, body = http(port, path, token=token)
            assert st == 401 and "token" in body["error"], (path, st)
            assert hdr["WWW-Authenticate"] == "Bearer"
    st, _, page = http(port, "/", token=None, raw=True)
    assert st == 401 and b'name="token"' in page and TOKEN.encode() not in page
    st, _, _ = http(port, f"/api/alarms/{some}/verdict", token=None, method="POST", body={"verdict": "defect"})
    assert st == 401
    assert http(port, "/healthz", token=None)[0] == 200
    assert http(port, "/metrics", token=None, raw=True)[0] == 200
    st, _, page = http(port, "/", raw=True)
    assert st == 200 and TOKEN.encode() not in page and b"item_" in page
    assert http(port, f"/api/alarms/{some}")[2]["verdict"] is None  # nothing written


def test_bad_input_is_a_clear_4xx_and_writes_nothing(line):
    port = line["port"]
    some = http(port, "/api/alarms?limit=1")[2]["alarms"][0]["id"]
    v = f"/api/alarms/{some}/verdict"
    cases = [
        (f"/api/alarms/{'0' * 32}/verdict", {"verdict": "defect"}, {}, 404, "no alarm"),
        ("/api/alarms/nonsense/verdict", {"verdict": "defect"}, {}, 404, "no alarm"),
        (v, {"verdict": "maybe"}, {}, 422, "defect"),
        (v, {"verdict": "defect", "extra": 1}, {}, 400, "verdict"),
        (v, b"{not json", {"Content-Type": "application/json"}, 400, "JSON"),
        (v, b'{"verdict": "defect"}', {"Content-Type": "text/plain"}, 415, "JSON"),
        (v, json.dumps({"verdict": "defect", "pad": "x" * 10000}).encode(), {"Content-Type": "application/json"},
         413, "larger"),
        (v, {"verdict": "defect"}, {"Origin": "http://evil.example"}, 403, "cross-origin"),
    ]
    for path, body, headers, status, word in cases:
        st, _, resp = http(port, path, method="POST", body=body, headers=headers)
        assert st == status and word in resp["error"], (path, body, st, resp)
    for path in (f"/api/alarms/{some}/images/..%2F..%2Fhistory.db", f"/api/alarms/{some}/images/..%2Fframe",
                 "/api/alarms/..%2F..%2Fhistory/images/frame", f"/api/alarms/{some}/images/passwd",
                 f"/api/alarms/{some}/images/%2Fetc%2Fpasswd"):
        st, _, data = http(port, path, raw=True)
        assert st == 404 and b"root:" not in data and b"SQLite" not in data, path
    for q, word in (("since=yesterday", "since"), ("verdict=meh", "verdict"), ("limit=ten", "limit"),
                    ("min_score=high", "min_score")):
        st, _, resp = http(port, f"/api/alarms?{q}")
        assert st == 400 and word in resp["error"], q
    assert all(a["verdict"] is None for a in http(port, "/api/alarms?limit=1000")[2]["alarms"])


def login(port, token):
    """(status, the session cookie or None) of the login form's POST."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/login", body=f"token={token}", headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    r.read()
    cookie = r.getheader("Set-Cookie")
    c.close()
    return r.status, cookie


def test_login_sets_a_strict_httponly_session_and_posts_need_the_csrf_token(line):
    port = line["port"]
    st, cookie = login(port, "not-the-token")
    assert st == 401 and cookie is None
    st, cookie = login(port, TOKEN)
    assert st == 303 and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    session = cookie.split(";")[0]
    assert TOKEN not in session
    h = {"Cookie": session}
    st, _, page = http(port, "/", token=None, headers=h, raw=True)
    assert st == 200 and TOKEN.encode() not in page
    csrf = re.search(rb'name="csrf" content="([0-9a-f]+)"', page).group(1).decode()
    target = http(port, "/api/alarms?camera=scanner&verdict=unreviewed")[2]["alarms"][0]["id"]
    st, _, body = http(port, f"/api/alarms/{target}/verdict", token=None, method="POST", body={"verdict": "defect"},
                       headers=h)
    assert st == 403 and "X-CSRF-Token" in body["error"]
    assert http(port, f"/api/alarms/{target}")[2]["verdict"] is None
    st, _, body = http(port, f"/api/alarms/{target}/verdict", token=None, method="POST", body={"verdict": "defect"},
                       headers={**h, "X-CSRF-Token": csrf})
    assert st == 200 and body["verdict"] == "defect"


def test_verdicts_over_http_and_mqtt_are_published_and_counted(line):
    port, sub = line["port"], line["sub"]
    belt = http(port, "/api/alarms?camera=belt&limit=1000")[2]["alarms"]
    st, _, a = http(port, f"/api/alarms/{belt[0]['id']}/verdict", method="POST", body={"verdict": "defect"})
    assert st == 200 and a["verdict"] == "defect" and a["verdict_source"] == "console"
    sub.publish("ganomaly/line1/belt/verdict/set", json.dumps({"id": belt[1]["id"], "verdict": "false_alarm"}))
    for bad in (b"{oops", json.dumps({"id": belt[2]["id"], "verdict": "perhaps"}).encode(), b"x" * 5000):
        sub.publish("ganomaly/line1/belt/verdict/set", bad)
    sub.publish("ganomaly/line1/belt/verdict/set", json.dumps({"id": "f" * 32, "verdict": "defect"}))
    got = wait(lambda: len(sub.json("/belt/verdict")) >= 2 and sub.json("/belt/verdict"), 30)
    assert got, "no verdict published"
    assert {(m["id"], m["verdict"], m["source"]) for m in got} == {
        (belt[0]["id"], "defect", "console"), (belt[1]["id"], "false_alarm", "mqtt")}
    assert http(port, f"/api/alarms/{belt[1]['id']}")[2]["verdict"] == "false_alarm"
    assert http(port, f"/api/alarms/{belt[2]['id']}")[2]["verdict"] is None
    fa = http(port, "/api/alarms?verdict=false_alarm")[2]["alarms"]
    assert [a["id"] for a in fa] == [belt[1]["id"]]
    log = open(line["log"]).read()
    assert "rejected" in log and "no alarm 'ffffffff" in log
    m = metrics(port)
    assert m[("ganomaly_verdict_messages_total", (("result", "rejected"),))] == 3
    assert m[("ganomaly_verdict_messages_total", (("result", "unknown_id"),))] == 1
    assert m[("ganomaly_verdicts_total", (("camera", "belt"), ("verdict", "defect")))] == 1
    assert m[("ganomaly_precision", (("camera", "belt"),))] == 0.5


def metrics(port):
    from prometheus_client.parser import text_string_to_metric_families

    st, hdr, text = http(port, "/metrics", token=None, raw=True)
    assert st == 200 and hdr["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_count(line):
    m = metrics(line["port"])
    assert m[("ganomaly_alarms_total", (("camera", "scanner"),))] == 6
    assert m[("ganomaly_alarms_total", (("camera", "belt"),))] == 10
    assert m[("ganomaly_frames_processed_total", (("camera", "belt"),))] == 10
    assert m[("ganomaly_frames_dropped_total", (("camera", "belt"),))] == 0
    assert m[("ganomaly_camera_up", (("camera", "scanner"),))] == 1  # a watched folder stays online
    assert m[("ganomaly_history_alarms", ())] == 16 and m[("ganomaly_history_bytes", ())] > 1000
    assert m[("ganomaly_stage_latency_seconds_count", (("camera", "belt"), ("stage", "capture_to_decision")))] == 10
    assert m[("ganomaly_engine_seconds_count", (("camera", "scanner"),))] >= 1
    assert ("ganomaly_outbox_events", ()) in m and m[("ganomaly_mqtt_connected", ())] == 1
    st, _, h = http(line["port"], "/healthz", token=None)
    assert st == 200 and h["ok"] is True


def test_the_page_shows_small_thumbnails_and_a_verdict_at_once(line):
    """The rows' images are the history's thumb.jpg (at most 160 px a side, kept by the browser);
    a verdict shows on the very next page load (the agent keeps the rendered page until history
    changes: a stale page would fail here)."""
    port = line["port"]
    st, _, page = http(port, "/", raw=True)
    srcs = re.findall(rb'<img loading="lazy" alt="" src="(/api/alarms/([0-9a-f]{32})/images/([a-z0-9-]+))"', page)
    assert st == 200 and len(srcs) == 16 and {s[2] for s in srcs} == {b"thumb"}
    for url, eid, _ in srcs[:4]:
        st, hdr, data = http(port, url.decode(), raw=True)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert st == 200 and hdr["content-type"] == "image/jpeg" and "immutable" in hdr["cache-control"]
        assert max(img.shape[:2]) <= 160 and len(data) < 16 * 1024
        path = line["tmp"] / "history" / "files" / eid.decode() / "thumb.jpg"
        assert os.stat(path).st_mode & 0o777 == 0o600 and path.read_bytes() == data
    assert http(port, "/", raw=True)[2] == page  # nothing changed: the same page
    target = http(port, "/api/alarms?camera=scanner&verdict=unreviewed")[2]["alarms"][-1]["id"]
    assert f'data-id="{target}" data-verdict=""'.encode() in page
    st, _, _ = http(port, f"/api/alarms/{target}/verdict", method="POST", body={"verdict": "false_alarm"})
    assert st == 200
    assert f'data-id="{target}" data-verdict="false_alarm"'.encode() in http(port, "/", raw=True)[2]
    unreviewed = http(port, "/?verdict=unreviewed", raw=True)[2]
    assert target.encode() not in unreviewed and unreviewed.count(b"<tr data-id=") == len(
        http(port, "/api/alarms?verdict=unreviewed&limit=1000")[2]["alarms"])


class _Agent:
    """What the review page and the image route read of the agent: its cameras."""
    pipelines = []


def test_an_old_alarm_without_a_thumbnail_and_new_alarms_on_the_page(tmp_path):
    """A history kept before thumbnails (its alarms name no thumb.jpg) opened by this agent: its
    rows show their crop as before; a new alarm and a verdict (the alarm thread's and MQTT's
    paths into History) show on the next page load. The console in this process on a real
    socket, with a real History; the agent is a stub (nothing else of it is read)."""
    import sqlite3

    from ganomaly_edge.agent.config import HttpConfig
    from ganomaly_edge.agent.console import Console
    from ganomaly_edge.agent.history import History

    def alarm(h, i):
        eid = os.urandom(16).hex()
        img = np.random.default_rng(i).integers(0, 255, (300, 400, 3), np.uint8)
        crop = cv2.imencode(".jpg", img)[1].tobytes()
        ev = {"id": eid, "ts": time.time() - 100 + i, "camera": "cam", "score": 2.0, "threshold": 1.0, "item": None,
              "boxes": [], "model": {"name": "m", "hash": "0" * 64}}
        assert h.add(ev, [(f"p/cam/alarm/{eid}/crop/0", crop)], (cv2.imencode(".png", img)[1].tobytes(), "png"))
        return eid

    folder = str(tmp_path / "history")
    h = History(folder)
    old = alarm(h, 0)
    h.close()
    db = sqlite3.connect(os.path.join(folder, "history.db"))  # as the agent before thumbnails kept it
    db.execute("UPDATE alarms SET images = ? WHERE id = ?", (json.dumps({"crop-0": "crop-0.jpg", "frame": "frame.png"}), old))
    db.commit()
    db.close()
    os.remove(os.path.join(folder, "files", old, "thumb.jpg"))

    h = History(folder)
    port = free_port()
    c = Console(_Agent(), h, HttpConfig(listen=f"127.0.0.1:{port}"), TOKEN)
    c.start()
    try:
        page = http(port, "/", raw=True)[2]
        assert f'src="/api/alarms/{old}/images/crop-0"'.encode() in page
        assert http(port, f"/api/alarms/{old}/images/thumb", raw=True)[0] == 404
        assert http(port, f"/api/alarms/{old}/images/crop-0", raw=True)[0] == 200
        assert set(http(port, f"/api/alarms/{old}")[2]["images"]) == {"crop-0", "frame"}
        new = alarm(h, 1)  # the alarm thread keeps one more
        page = http(port, "/", raw=True)[2]
        assert f'src="/api/alarms/{new}/images/thumb"'.encode() in page and page.count(b"<tr data-id=") == 2
        st, _, thumb = http(port, f"/api/alarms/{new}/images/thumb", raw=True)
        assert st == 200 and cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
        h.set_verdict(old, "defect", source="mqtt")  # a verdict from the plant
        assert f'data-id="{old}" data-verdict="defect"'.encode() in http(port, "/", raw=True)[2]
    finally:
        c.stop()
        h.close()


def test_review_in_a_headless_browser(line):
    """Log in, see the alarms, mark one false alarm with the keyboard: on the MQTT verdict topic
    and in /api/alarms."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system-packages installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, sub = line["port"], line["sub"]
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        drv.set_page_load_timeout(60)
        drv.get(f"http://127.0.0.1:{port}/")
        drv.find_element(By.ID, "token").send_keys(TOKEN)
        drv.find_element(By.ID, "login").click()
        wait_ = WebDriverWait(drv, 60)
        wait_.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 16)
        cookie = drv.get_cookie("ganomaly_session")
        assert cookie["httpOnly"] and cookie.get("sameSite") == "Strict" and TOKEN not in cookie["value"]
        assert TOKEN not in drv.page_source
        rows = drv.find_elements(By.CSS_SELECTOR, "#rows tr")
        target = next(i for i, r in enumerate(rows) if not r.get_attribute("data-verdict"))
        body = drv.find_element(By.TAG_NAME, "body")
        for _ in range(target + 1):
            body.send_keys("j")
        wait_.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#frameimg"))
        chosen = drv.find_elements(By.CSS_SELECTOR, "#rows tr")[target]
        assert "sel" in chosen.get_attribute("class")
        event_id = chosen.get_attribute("data-id")
        wait_.until(lambda d: d.execute_script("return document.getElementById('frameimg').naturalWidth") > 0)
        body.send_keys("f")
        wait_.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr")[target].get_attribute("data-verdict")
                    == "false_alarm")
        wait_.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#live .cam"))
    finally:
        drv.quit()
    assert wait(lambda: any(m["id"] == event_id and m["verdict"] == "false_alarm" and m["source"] == "console"
                            for m in sub.json("/verdict")), 30)
    assert http(port, f"/api/alarms/{event_id}")[2]["verdict"] == "false_alarm"


def test_a_verdict_survives_a_restart(line):
    port = line["port"]
    marked = http(port, "/api/alarms?verdict=defect")[2]["alarms"]
    assert marked
    stop(line["proc"])
    line["proc"] = start_agent(line["cfg"], line["log"], append=True)
    assert wait(lambda: _up(port), 90), open(line["log"]).read()
    after = {a["id"]: a for a in http(port, "/api/alarms?limit=1000")[2]["alarms"]}
    for a in marked:
        assert after[a["id"]]["verdict"] == "defect"
    assert sum(a["camera"] == "scanner" for a in after.values()) == 6  # processed items are not inspected again


def minimal_config(tmp, http):
    p = tmp / "c.toml"
    p.write_text(f'[model]\nbundle = "b"\n[store]\npath = "{tmp}/ev.db"\n[http]\n{http}\n[[cameras]]\nname = "a"\n'
                 '[cameras.source]\nkind = "file"\nuri = "x"\n')
    return str(p)


@pytest.mark.parametrize("http_cfg, error", [
    ('listen = "0.0.0.0:8080"', "not loopback: set http.token_file"),
    ('listen = "192.168.1.20:8080"', "not loopback: set http.token_file"),
    ('listen = "0.0.0.0:8080"\ntoken_file = "missing-token"', "missing-token' cannot be read"),
    ('listen = "0.0.0.0:8080"\ntoken_file = "{tmp}/empty"', "is empty or shorter than 8"),
    ('listen = "127.0.0.1"', "must be host:port"),
    ('listen = "127.0.0.1:8080"\ntls_cert_file = "c.pem"', "go together"),
])
def test_console_config_errors_name_the_problem(tmp_path, monkeypatch, http_cfg, error):
    from ganomaly_edge.agent.config import ConfigError, load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_settings(minimal_config(tmp_path, http_cfg.replace("{tmp}", str(tmp_path))))


def test_token_file_from_credentials_directory(tmp_path, monkeypatch):
    from ganomaly_edge.agent.config import load_settings

    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "console-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    s = load_settings(minimal_config(tmp_path, 'listen = "0.0.0.0:8080"\ntoken_file = "console-token"'))
    assert s.http.resolved_token() == TOKEN
    assert TOKEN not in s.model_dump_json()  # the file name is configured, never the token


def test_a_full_history_disk_stops_neither_inspection_nor_delivery(tmp_path):
    """History on a 512 KiB disk: every item is still inspected and every alarm delivered."""
    from ganomaly_edge.tools.broker import Mosquitto

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        with Mosquitto(workdir=str(tmp_path / "broker")) as broker:
            scans = tmp_path / "scans"
            scans.mkdir()
            rng = np.random.default_rng(0)
            for i in range(40):  # noise PNGs of 160x160x3: ~77 KB each as the history's lossless frame
                cv2.imwrite(str(scans / f"n_{i:03d}.png"), rng.integers(0, 255, (160, 160, 3), np.uint8))
            cfg = line_config(tmp_path, broker.port, free_port(), str(scans), str(tmp_path / "none.avi"))
            text = open(cfg).read().replace(f'path = "{tmp_path / "history"}"', f'path = "{small / "history"}"')
            text = text[:text.index("[[cameras]]\nname = \"belt\"")].replace("roi = { x = 8, y = 4, w = 64, h = 72 }\nrotate = 90\n", "")
            text = text.replace("settle_s = 0.2", "settle_s = 0.2\nwatch = false")
            open(cfg, "w").write(text)
            sub = Subscriber(broker.port, "ganomaly/line1", client_id="console-sub")
            p = start_agent(cfg, str(tmp_path / "agent.log"))
            assert p.wait(180) == 0, open(tmp_path / "agent.log").read()
            assert wait(lambda: len(sub.json("/scanner/alarm")) >= 40, 30), len(sub.json("/scanner/alarm"))
            sub.close()
        from ganomaly_edge.agent.history import History

        h = History(str(small / "history"))
        c = h.counters()
        assert c["evicted_disk_full"] + c["dropped_disk_full"] > 0, c
        assert 0 < h.totals()["alarms"] < 40
        h.close()
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_discovery_names_the_console_only_where_others_can_reach_it(tmp_path, monkeypatch):
    from ganomaly_edge.agent.config import load_settings
    from ganomaly_edge.agent.discovery import discovery_messages
    from ganomaly_edge.agent.topics import Topics

    (tmp_path / "tok").write_text(TOKEN)
    for listen, url in (("127.0.0.1:8080", None), ("0.0.0.0:8080", None),
                        ("192.168.7.2:8080", "http://192.168.7.2:8080/")):
        s = load_settings(minimal_config(tmp_path, f'listen = "{listen}"\ntoken_file = "{tmp_path}/tok"'))
        device = json.loads(discovery_messages(s, Topics(s.prefix))[0][1])["device"]
        assert device.get("configuration_url") == url, listen
