"""Reading an operator's JSON log from a test: the events it logged, the ports it bound.

Start the operator with its servers on port 0 (``--metrics-bind-address=127.0.0.1:0``,
``--health-probe-bind-address=127.0.0.1:0``, ``--log-format=json``) and read the ports
back with :func:`served_ports`: each server logs ``serving`` with the port it bound and
the paths it serves. Picking free ports in the test and passing them on races with every
other process that takes a port in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["log_entries", "served_ports"]


def log_entries(path: Path, event: str, offset: int = 0) -> Iterator[dict[str, Any]]:
    """The JSON lines of the log at ``path`` (from byte ``offset``) whose event is
    ``event``; none while the file does not exist."""
    if not path.exists():
        return
    marker = json.dumps(event).encode()
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            if marker not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                yield entry


def served_ports(path: Path, offset: int = 0) -> dict[str, int]:
    """HTTP path → port of every server the operator logged as serving (e.g.
    ``{"/metrics": 40123, "/readyz": 40125, …}``); empty until they are up."""
    ports: dict[str, int] = {}
    for entry in log_entries(path, "serving", offset):
        for served in entry.get("paths") or []:
            ports.setdefault(str(served), int(entry["port"]))
    return ports
