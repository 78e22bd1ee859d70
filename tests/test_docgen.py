"""The generated reference pages (docs/configuration.md, docs/mqtt.md) are current: a config
model, topic or alarm field changed without ``python -m ganomaly_edge.agent.docgen`` fails here."""

import os
import subprocess
import sys

from support.data import ROOT

from ganomaly_edge.agent import docgen
from ganomaly_edge.agent.alarm import AlarmEvent
from ganomaly_edge.agent.config import Settings
from ganomaly_edge.agent.topics import Topics


def _walk(model, out):
    for key, field in model.model_fields.items():
        out.append((model, key, field))
        nested = docgen._nested_model(field.annotation)
        if nested is not None:
            _walk(nested, out)
    return out


def test_committed_pages_are_current():
    for name, text in docgen.pages().items():
        path = os.path.join(ROOT, "docs", name)
        assert os.path.exists(path), f"{path} missing: run python -m ganomaly_edge.agent.docgen"
        assert open(path).read() == text, f"docs/{name} is out of date: run python -m ganomaly_edge.agent.docgen"


def test_every_config_key_is_documented_with_type_default_and_description():
    page = docgen.configuration_page()
    for section in ("[model]", "[mqtt]", "[mqtt.tls]", "[store]", "[[cameras]]", "[cameras.source]",
                    "[cameras.roi]", "[cameras.decision]", "[cameras.localisation]"):
        assert f"## {section}\n" in page, section
    for model, key, field in _walk(Settings, []):
        assert field.description, f"{model.__name__}.{key} has no description: every key needs one"
        rows = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
        assert any(docgen._escape(field.description) in r for r in rows), (model.__name__, key)
    assert "| `port` | integer (>= `1`, <= `65535`) | `1883` |" in page
    assert "| `cameras` | list of table (length >= `1`) | **required** |" in page
    assert "| `device_id` |" in page and "the host name" in page  # not this machine's name
    assert os.uname().nodename.split(".")[0] not in page.split("| `device_id` |")[1].split("\n")[0]


def test_every_topic_discovery_message_and_alarm_field_is_documented():
    page = docgen.mqtt_page()
    t = Topics("<prefix>")
    for topic in (t.available(), t.available_reason(), t.status("<camera>"), t.status_reason("<camera>"),
                  t.latest_crop("<camera>"), t.alarm("<camera>"), t.crop("<camera>", "<id>", "<k>"),
                  t.overlay("<camera>", "<id>"), t.stats()):
        assert f"| `{topic}` | " in page, topic
    for name in [n for n in vars(Topics) if not n.startswith("_")]:
        assert getattr(Topics, name).__doc__, f"Topics.{name} needs a docstring: it is the page's description"
    for component, key in (("binary_sensor", "anomaly"), ("sensor", "score"), ("image", "crop")):
        assert f"`homeassistant/{component}/ganomaly_edge_<device_id>_<camera>/{key}/config`" in page
    for key, field in AlarmEvent.model_fields.items():
        assert f"| `{field.alias or key}` |" in page and field.description, key
    example = page.split("```json\n")[1].split("```")[0]
    AlarmEvent.model_validate_json(example)  # the example is a valid event


def test_check_flags_a_stale_page_and_regeneration_fixes_it(tmp_path):
    """The one command the lead reruns after a merge: it writes both pages; --check exits 1 on a stale one."""
    cmd = [sys.executable, "-m", "ganomaly_edge.agent.docgen", "--docs", str(tmp_path)]
    r = subprocess.run(cmd + ["--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "configuration.md: out of date" in r.stdout and "docgen" in r.stdout
    assert subprocess.run(cmd, cwd=ROOT).returncode == 0
    assert subprocess.run(cmd + ["--check"], cwd=ROOT).returncode == 0
    (tmp_path / "mqtt.md").write_text((tmp_path / "mqtt.md").read_text().replace("alarm", "alert"))
    r = subprocess.run(cmd + ["--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "mqtt.md" in r.stdout and "configuration.md" not in r.stdout
