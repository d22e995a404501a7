"""`make demo` end to end: without a terminal (CI, the README refresh) it must end on its own, with the report, its
plots beside it, and the command that serves the data again. Trains the toy world: slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_ends_on_its_own_without_a_terminal(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.demo", str(tmp_path / "demo")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verdict: PASSED" in result.stderr and "**Verdict: PASSED**" in result.stdout
    assert "web UI:    http://127.0.0.1:" in result.stdout
    assert "LINGUDISTILL_DATA_DIR=" in result.stdout and " serve --port " in result.stdout  # the restart command
    for plot in ("scores.svg", "loss.svg", "loss_by_source.svg"):
        assert (tmp_path / "demo" / plot).is_file(), f"report.md links {plot}"
    assert (tmp_path / "demo" / "model" / "config.json").is_file()
