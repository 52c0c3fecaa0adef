"""hack/tools/progress.sh, with a stand-in ``go``: a build reports how far it is, passes
go's errors through and keeps go's exit status; a slow step says so, a quick one not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = ROOT / "hack" / "tools" / "progress.sh"

# `go list` names 4 stale packages; `go build -v` compiles them (a package path per line
# on stderr), spends $GO_PAUSE seconds on the second, prints a compiler error among them, then
# exits with $GO_STATUS.
FAKE_GO = """#!/usr/bin/env bash
case "$1" in
  list) printf 'stale\\nstale\\n\\nstale\\nstale\\n' ;;
  build)
    echo example.com/a >&2; sleep "${GO_PAUSE:-0}"; echo example.com/b >&2
    echo "# example.com/c" >&2
    echo "c/c.go:3:1: syntax error" >&2
    echo example.com/c >&2; echo example.com/main >&2
    exit "${GO_STATUS:-0}" ;;
esac
"""


def _run(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "go").write_text(FAKE_GO)
    (bin_dir / "go").chmod(0o755)
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source {PROGRESS}; {script}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
        check=False,
    )


def test_a_build_reports_packages_against_the_stale_count(tmp_path: Path) -> None:
    done = _run(tmp_path, "go_build_progress tool ./cmd -o out", PROGRESS_EVERY="1", GO_PAUSE="2.5")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "tool: compiling 4 packages, then linking (0s so far)" in lines
    # Reported while the second package compiles: a quiet spell is no silence.
    assert any(line.startswith("tool: 1/4 packages (25%), ") for line in lines), lines
    assert any(line.startswith("tool: 4/4 packages (100%), ") for line in lines), lines
    assert "tool: linking" in lines
    assert lines[-1].startswith("tool: done in ")
    # go's own messages are passed through, not counted.
    assert "# example.com/c" in lines
    assert "c/c.go:3:1: syntax error" in lines


def test_a_failed_build_keeps_gos_exit_status(tmp_path: Path) -> None:
    done = _run(tmp_path, "go_build_progress tool ./cmd", GO_STATUS="2")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("tool: go build failed after ")


def test_a_slow_step_is_announced_and_a_quick_one_is_not(tmp_path: Path) -> None:
    slow = _run(tmp_path, "say_if_slow 'working on it' sleep 1.5; echo after")
    assert (slow.returncode, slow.stderr, slow.stdout) == (0, "working on it\n", "after\n")
    quick = _run(tmp_path, "say_if_slow 'working on it' true; sleep 1.2")
    assert (quick.returncode, quick.stderr) == (0, "")
    failed = _run(tmp_path, "say_if_slow 'working on it' false")
    assert failed.returncode == 1
