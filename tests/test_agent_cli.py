"""The agent's command line (agent/cli.py): --check-config, --print-config, journald priorities."""

import os

from support.agent import MINIMAL_CONFIG


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
