"""The benchmark's report: medians per rate, failed phases still shown, paired runs."""

from __future__ import annotations

from typing import Any

from hack.bench import report


def _conv(controller: str, run: int, cpu: float, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"controller": controller, "n": 1000, "run": run, "ok": True}
    row |= {"cpu_per_1000": cpu, "foreign_cores": 0.0, "objects_per_s": 100.0 + run}
    return row | extra


def _lat(controller: str, run: int, rate: float, p99: float, ok: bool = True) -> dict[str, Any]:
    return {"controller": controller, "n": 1000, "run": run, "ok": ok, "target_rate": rate,
            "p50_ms": p99 / 4, "p90_ms": p99 / 2, "p99_ms": p99, "cpu_per_1000": 2.0,
            "foreign_cores": 0.1, "writes": 100, "flips": 50, "same_state": 50,
            "timeouts": 0 if ok else 3, "unrestored": 0, "conflicts": 0}  # fmt: skip


def test_latency_is_summarized_per_rate_and_a_failed_phase_keeps_its_numbers() -> None:
    latency = [
        _lat("ours", 1, 50.0, 20.0),
        _lat("ours", 2, 50.0, 30.0),
        _lat("ours", 3, 50.0, 90.0),
        _lat("ours", 1, 200.0, 900.0, ok=False),
    ]
    summary = report.summarize([_conv("ours", 1, 1.5)], latency)
    by_rate = {e["target_rate"]: e for e in summary["latency"]}
    assert by_rate[50.0]["p99_ms"] == 30.0
    assert by_rate[50.0]["runs"] == 3
    assert by_rate[200.0]["failed"] == 1
    assert by_rate[200.0]["p99_ms"] == 900.0
    text = report.markdown(summary, _meta())
    assert "| ours (**1 failed**) | 1,000 | 200 | 225.0 | 450.0 | 900.0 |" in text


def test_pairs_match_ours_and_the_baseline_by_run() -> None:
    convergence = [
        _conv("ours", 1, 1.5),
        _conv("baseline", 1, 2.0),
        _conv("baseline", 2, 1.8),
        _conv("ours", 2, 1.6),
        _conv("ours", 3, 1.4),  # its baseline failed: no pair
        _conv("baseline", 3, 9.9) | {"ok": False},
    ]
    summary = report.summarize(convergence, [])
    pairs = [(p["run"], p["baseline_cpu_per_1000"], p["cpu_per_1000"]) for p in summary["paired"]]
    assert pairs == [(1, 2.0, 1.5), (2, 1.8, 1.6)]
    text = report.markdown(summary, _meta())
    assert "| convergence, N=1,000 | 2 | 1.90 | 1.55 | 0.82× | 2.00 → 1.50, 1.80 → 1.60 |" in text


def _meta() -> dict[str, Any]:
    return {"machine": "m", "versions": "v", "workers": 8, "runs": 3, "quiet_cores": 0.25,
            "quiet_timeout": 900.0, "settle": 3.0, "latency": "N=1,000",
            "baseline": "/b"}  # fmt: skip
