"""The shell tools in tools/ answer --help with their header (what they do, their settings) and refuse other
arguments in one line, before doing anything."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.name for p in (ROOT / "tools").glob("*.sh"))


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_answers_help_and_refuses_other_arguments(tool, tmp_path):
    header = (ROOT / "tools" / tool).read_text().splitlines()[1].lstrip("# ")
    r = subprocess.run(["bash", f"tools/{tool}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and header in r.stdout and "set -" not in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["bash", f"tools/{tool}", "--no-such-option"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")})
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()
