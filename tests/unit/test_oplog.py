"""Reading the operator's JSON log: events by name, served ports, a start's offset."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.envtest.oplog import log_entries, served_ports


def _line(**fields: object) -> str:
    return json.dumps(fields) + "\n"


def test_served_ports_map_each_path_to_its_server(tmp_path: Path) -> None:
    log = tmp_path / "op.log"
    assert served_ports(log) == {}  # not written yet
    log.write_text(
        _line(event="starting")
        + _line(event="serving", port=4001, paths=["/healthz", "/readyz"])
        + "not json, e.g. a stray print\n"
        + _line(event="serving", port=4002, paths=["/metrics"])
    )
    assert served_ports(log) == {"/healthz": 4001, "/readyz": 4001, "/metrics": 4002}


def test_an_offset_skips_the_lines_of_an_earlier_start(tmp_path: Path) -> None:
    log = tmp_path / "op.log"
    log.write_text(_line(event="serving", port=4001, paths=["/readyz"]))
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write(_line(event="serving", port=5001, paths=["/readyz"]))
    assert served_ports(log) == {"/readyz": 4001}
    assert served_ports(log, offset) == {"/readyz": 5001}


def test_log_entries_match_the_event_not_just_the_text(tmp_path: Path) -> None:
    log = tmp_path / "op.log"
    log.write_text(
        _line(event="decided", resource_version="7", outcome="Ready")
        + _line(event="state changed", note="decided")
        + _line(event="decided", resource_version="9", outcome="NotReady")
    )
    got = [(e["resource_version"], e["outcome"]) for e in log_entries(log, "decided")]
    assert got == [("7", "Ready"), ("9", "NotReady")]
