"""The agent's command line (agent/cli.py): --check-config, --print-config, journald priorities.

``ganomaly-agent``'s command line (agent/cli.py) as a user meets it, run as a process: no
--config, --check-config on a folder that is not there, a lowercase log level, --print-config
into a pipe that closes early."""

import os
import subprocess
import sys

from support.agent import MINIMAL_CONFIG
from support.data import ROOT
from ganomaly_edge.engine.selfcheck import BUNDLE_DIR


def test_check_config_opens_the_password_file_the_store_and_checks_the_prefix(tmp_path, tiny_bundle):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    good = (f'[model]\nbundle = "{tiny_bundle}"\n[mqtt]\nusername = "u"\npassword_file = "{tmp_path}/pw"\n'
            f'[store]\npath = "{tmp_path}/db/events.db"\n[[cameras]]\nname = "a"\n[cameras.source]\nkind = "file"\n'
            'uri = "x"\n')

    def check(text):
        cfg.write_text(text)
        return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--check-config"],
                              capture_output=True, text=True)

    r = check(good)
    assert r.returncode == 2 and "password_file" in r.stderr and "cannot be read" in r.stderr
    (tmp_path / "pw").write_text("secret\n")
    r = check(good)
    assert r.returncode == 0 and os.path.exists(tmp_path / "db" / "events.db"), r.stderr
    r = check(good.replace(f"{tmp_path}/db/events.db", "/proc/no/events.db"))
    assert r.returncode == 2 and "cannot open the event store" in r.stderr


def test_print_config_exits_and_hides_secrets(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text(MINIMAL_CONFIG + '[mqtt]\nusername = "u"\npassword = "hunter2"\n')
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--print-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "hunter2" not in r.stdout and "**********" in r.stdout


def test_log_lines_carry_journald_priorities_under_systemd(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "empty"
    folder.mkdir()
    from ganomaly_edge.engine.selfcheck import BUNDLE_DIR

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\nbundle = "{BUNDLE_DIR}/recon"\n[mqtt]\nport = 1\n[store]\npath = "{tmp_path}/e.db"\n'
                   f'[[cameras]]\nname = "a"\n[cameras.source]\nkind = "folder"\nuri = "{folder}"\nwatch = false\n')
    env = dict(os.environ, JOURNAL_STREAM="8:12345")
    r = subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", "-c", str(cfg), "--flush-timeout", "0"],
                       capture_output=True, text=True, env=env, timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 0 and lines and all(ln[:3] in ("<6>", "<4>", "<3>", "<7>") for ln in lines), lines[:5]
    assert any(ln.startswith("<3>") and "cannot connect" in ln for ln in lines)  # an error is an error


BUNDLE = os.path.join(BUNDLE_DIR, "recon")


def _env():
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GANOMALY_")}


def _agent(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ganomaly_edge.agent.cli", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120, **kw)


def _config(tmp_path, source, extra=""):
    path = tmp_path / "agent.toml"
    path.write_text(f"""device_id = "cli"
{extra}
[model]
bundle = "{BUNDLE}"
threads = 1
[store]
path = "{tmp_path / 'ev.db'}"
[[cameras]]
name = "scanner"
source = {source}
""")
    return str(path)


def test_no_config_says_what_to_pass():
    r = _agent()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Field required" not in r.stderr
    assert "--config" in r.stderr and "README.md" in r.stderr and "config.example.toml" in r.stderr


def test_check_config_refuses_a_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "scans"
    cfg = _config(tmp_path, f'{{ kind = "folder", uri = "{missing}" }}')
    r = _agent("--config", cfg, "--check-config")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"the folder '{missing}' does not exist" in r.stderr and "cameras.source.uri" in r.stderr
    missing.mkdir()
    r = _agent("--config", cfg, "--check-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_log_level_in_any_case(tmp_path):
    cfg = _config(tmp_path, '{ kind = "camera", uri = "0" }', extra='log_level = "info"')
    r = _agent("--config", cfg, "--print-config")
    assert r.returncode == 0, r.stderr
    assert '"log_level": "INFO"' in r.stdout
    cfg = _config(tmp_path, '{ kind = "camera", uri = "0" }', extra='log_level = "loud"')
    r = _agent("--config", cfg, "--print-config")
    assert r.returncode == 2 and "log_level" in r.stderr


def test_print_config_into_a_pipe_closed_early(tmp_path):
    """``ganomaly-agent --print-config | head -1``: the shell's way, through a real pipe."""
    cfg = _config(tmp_path, '{ kind = "camera", uri = "0" }')
    cmd = f"{sys.executable} -m ganomaly_edge.agent.cli --config {cfg} --print-config 2>{tmp_path / 'err'} | head -1"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    err = (tmp_path / "err").read_text()
    assert r.stdout == "{\n" and "Traceback" not in err and "BrokenPipe" not in err, err
    assert r.returncode == 0
    # The reader gone before the agent writes a byte: the same, quietly.
    p = subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", "--config", cfg, "--print-config"],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0 and b"Traceback" not in err, err.decode()
