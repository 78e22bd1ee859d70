"""The agent's configuration (agent/config.py): documented, strict, overridable from the environment."""

import os

import pytest

from ganomaly_edge.agent.config import ConfigError, Settings, load_settings
from support.agent import MINIMAL_CONFIG
from support.data import ROOT


def test_every_config_field_is_described_and_documented():
    text = open(os.path.join(ROOT, "config.example.toml")).read()

    def walk(model, path=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            ann = field.annotation
            sub = getattr(ann, "model_fields", None)
            args = getattr(ann, "__args__", ())
            inner = [a for a in args if hasattr(a, "model_fields")]
            if sub is None and inner:
                ann, sub = inner[0], inner[0].model_fields
            assert name in text, f"config.example.toml does not document {path}{name}"
            if sub is not None:
                walk(ann, f"{path}{name}.")

    walk(Settings)


def test_example_config_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(os.path.join(ROOT, "config.example.toml"))
    assert s.prefix.startswith("ganomaly/") and s.cameras


def test_unknown_keys_and_bad_values_are_rejected(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nbundle = "b"\nbogus = 1\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n')
    with pytest.raises(ConfigError, match=r"model\.bogus: Extra inputs are not permitted"):
        load_settings(str(p))
    p.write_text('[model]\nbundle = "b"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n')
    monkeypatch.setenv("GANOMALY_MQTT__PORT", "notaport")
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        load_settings(str(p))
    monkeypatch.setenv("GANOMALY_MQTT__PORT", "8883")
    monkeypatch.setenv("GANOMALY_MQTT__HOST", "broker.example")
    s = load_settings(str(p))
    assert (s.mqtt.host, s.mqtt.port) == ("broker.example", 8883)


def test_password_from_systemd_credentials(tmp_path, monkeypatch):
    from ganomaly_edge.agent.config import MqttConfig

    (tmp_path / "mqtt-pass").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert MqttConfig(username="u", password_file="mqtt-pass").resolved_password() == "s3cret"


@pytest.mark.parametrize("section,line,field", [
    ("cameras.decision", "threshold = nan", "threshold"),
    ("cameras.decision", "threshold = -inf", "threshold"),
    ("mqtt", "reconnect_max_s = inf", "reconnect_max_s"),
    ("store", "max_mb = inf", "max_mb"),
    ("mqtt", 'host = ""', "host"),
    ("model", "threads = 100000", "threads"),
    ("store", 'path = ""', "path"),
    ("mqtt", 'prefix = "plant/#"', "prefix"),
    ("mqtt", 'prefix = "$SYS/x"', "prefix"),
])
def test_values_that_make_no_sense_are_refused(tmp_path, section, line, field):
    text = MINIMAL_CONFIG.replace("[model]\n", "[model]\n" + (line + "\n" if section == "model" else ""))
    if section != "model":
        text += f"[{section}]\n{line}\n" if section != "cameras.decision" else f"[cameras.decision]\n{line}\n"
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=field):
        load_settings(str(p))


def test_store_path_must_name_a_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(MINIMAL_CONFIG + f'[store]\npath = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(str(p))


def test_camera_keys_can_be_overridden_from_the_environment_by_name(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nbundle = "b"\n[[cameras]]\nname = "conveyor"\n[cameras.source]\nkind = "camera"\n'
                 'uri = "0"\n[[cameras]]\nname = "xray"\n[cameras.source]\nkind = "folder"\nuri = "/srv/scans"\n')
    monkeypatch.setenv("GANOMALY_CAMERAS__conveyor__SOURCE__URI", "/dev/video2")
    monkeypatch.setenv("GANOMALY_CAMERAS__CONVEYOR__DECISION__K", "3")
    monkeypatch.setenv("GANOMALY_CAMERAS__xray__ROTATE", "90")
    monkeypatch.setenv("GANOMALY_MQTT__HOST", "broker.plant")  # the rest of the environment still applies
    s = load_settings(str(p))
    conv, xray = s.cameras
    assert conv.source.uri == "/dev/video2" and conv.decision.k == 3 and xray.rotate == 90
    assert s.mqtt.host == "broker.plant" and xray.source.uri == "/srv/scans"
    monkeypatch.setenv("GANOMALY_CAMERAS__nosuch__ROTATE", "90")
    with pytest.raises(ConfigError, match="no camera named 'nosuch'"):
        load_settings(str(p))


def test_default_client_id_is_the_machine_id_not_the_host_name(tmp_path):
    import socket

    from ganomaly_edge.agent.config import machine_id

    p = tmp_path / "c.toml"
    p.write_text(MINIMAL_CONFIG)
    s = load_settings(str(p))
    assert s.client_id == f"ganomaly-{machine_id()[:14]}" and socket.gethostname() not in s.client_id
    assert len(s.client_id) <= 23  # MQTT 3.1.1's guaranteed client id length


def test_auto_parallelism_gives_split_item_mode_one_worker_with_every_core(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nbundle = "b"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\nuri = "x"\n')
    m = load_settings(str(p)).model
    assert m.parallelism(4, items_split=True) == (1, 4)  # one worker, its calls split across the cores
    assert m.parallelism(4) == (4, 1)  # a stream: one worker per core
    p.write_text('[model]\nbundle = "b"\nworkers = 2\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\n'
                 'uri = "x"\n')
    assert load_settings(str(p)).model.parallelism(4, items_split=True) == (2, 2)  # what is set is kept
