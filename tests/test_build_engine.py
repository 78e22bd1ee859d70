"""``ganomaly-build-engine --help`` (train/build_engine.py) is plain text that explains every option."""

import re
import subprocess
import sys

from support.data import ROOT


def _help(*args):
    r = subprocess.run([sys.executable, "-c", "import sys; from ganomaly_edge.train.build_engine import main; "
                        "sys.exit(main())", *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_is_plain_text_with_help_for_every_option():
    text = _help()
    assert "``" not in text and ":func:" not in text
    options = text.split("options:\n", 1)[1]
    # Every option has a line of help after its name (argparse prints none when help is missing).
    for opt in re.findall(r"^  (--[a-z-]+)", options, re.M):
        block = options.split(f"  {opt}", 1)[1].split("\n  --", 1)[0]
        words = re.sub(r"^[ A-Z_.{},|a-z0-9-]*?\s{2,}", "", block.strip(), count=1)
        assert len(words.split()) >= 3, f"{opt} has no help: {block!r}"
    for opt in ("--precision", "--workspace-mib", "--quiet"):
        assert opt in options
    assert "MiB" in options.split("--workspace-mib", 1)[1].split("--", 1)[0]
    assert "``" not in _help("--self-check")
