"""Medians over runs, ratios, and the Markdown tables of a benchmark result."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from hack.bench.contenders import ALL, CONTROLLER_RUNTIME, KOPF, OURS, RAW

Row = dict[str, Any]
KIB = 1024
MIB = 1024 * 1024


def median_of(rows: Iterable[Row], field: str) -> float | None:
    values = [r[field] for r in rows if r.get("ok") and r.get(field) is not None]
    return statistics.median(values) if values else None


def _select(rows: list[Row], controller: str, n: int) -> list[Row]:
    return [r for r in rows if r["controller"] == controller and r["n"] == n]


_LATENCY_MEDIANS = (
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "floor_p50_ms",
    "restore_p50_ms",
    "restore_p90_ms",
    "restore_p99_ms",
    "restore_max_ms",
    "flip_blank_p50_ms",
    "flip_blank_p90_ms",
    "flip_blank_p99_ms",
    "flip_blank_max_ms",
    "restore_over_decide_p99",
    "cpu_per_1000",
    "rate",
    "foreign_cores",
)
_LATENCY_SUMS = ("writes", "flips", "same_state", "timeouts", "unrestored", "conflicts")


def summarize(convergence: list[Row], latency: list[Row]) -> dict[str, Any]:
    """Medians per controller and N, the memory slope, and the ratios."""
    ns = sorted({r["n"] for r in convergence})
    controllers = [c for c in ALL if any(r["controller"] == c for r in convergence)]
    fields = (
        "objects_per_s",
        "processing_per_s",
        "startup_s",
        "readyz_s",
        "converged_s",
        "cpu_per_1000",
        "cpu_total_s",
        "rss_bytes",
        "hwm_bytes",
        "apiserver_cpu_per_1000",
        "foreign_cores",
    )
    conv: dict[str, dict[int, dict[str, Any]]] = {}
    for c in controllers:
        conv[c] = {}
        for n in ns:
            rows = _select(convergence, c, n)
            entry: dict[str, Any] = {f: median_of(rows, f) for f in fields}
            entry["runs"] = len(rows)
            entry["failed"] = sum(1 for r in rows if not r["ok"])
            conv[c][n] = entry
    lat: dict[str, dict[int, dict[str, Any]]] = {}
    for c in controllers:
        for n in sorted({r["n"] for r in latency}):
            rows = _select(latency, c, n)
            if not rows:
                continue
            entry = {f: median_of(rows, f) for f in _LATENCY_MEDIANS}
            entry |= {f: sum(r.get(f, 0) for r in rows) for f in _LATENCY_SUMS}
            entry["runs"] = len(rows)
            entry["failed"] = sum(1 for r in rows if not r["ok"])
            lat.setdefault(c, {})[n] = entry
    memory: dict[str, float | None] = {}
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        for c in controllers:
            a, b = conv[c][lo]["rss_bytes"], conv[c][hi]["rss_bytes"]
            memory[c] = (b - a) / (hi - lo) if a is not None and b is not None else None
    return {"ns": ns, "controllers": controllers, "convergence": conv, "latency": lat,
            "bytes_per_object": memory}  # fmt: skip


def _fmt(value: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _status(entry: dict[str, Any]) -> str:
    return f" (**{entry['failed']} failed**)" if entry.get("failed") else ""


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    conv = summary["convergence"]
    controllers: list[str] = summary["controllers"]
    lines = [
        "# Workspace status controller benchmark",
        "",
        f"Machine: {meta['machine']}. Versions: {meta['versions']}.",
        f"Workers (max concurrent reconciles / raw connections): {meta['workers']}. "
        f"Runs: {meta['runs']}; every number is the median over runs.",
        "",
        "*other load* is what processes outside the benchmark (other test suites, builds) "
        "kept busy on the machine's cores during a measurement; each measurement starts "
        "only once that is below "
        f"{meta['quiet_cores']} cores (or after {meta['quiet_timeout']:.0f} s of waiting), "
        "and a value well above it means the numbers on that row are disturbed.",
        "",
    ]
    for n in summary["ns"]:
        raw = conv.get(RAW, {}).get(n, {})
        ours = conv.get(OURS, {}).get(n, {})
        rows = []
        for c in controllers:
            e = conv[c][n]
            rows.append(
                [
                    f"{c}{_status(e)}",
                    _fmt(e["objects_per_s"]),
                    _ratio(e["objects_per_s"], raw.get("objects_per_s")),
                    _fmt(e["processing_per_s"]),
                    _ratio(e["processing_per_s"], raw.get("processing_per_s")),
                    _ratio(ours.get("objects_per_s"), e["objects_per_s"]),
                    _fmt(e["converged_s"], ".2f"),
                    _fmt(e["startup_s"], ".2f"),
                    _fmt(e["cpu_per_1000"], ".2f"),
                    _fmt(e["apiserver_cpu_per_1000"], ".2f"),
                    _fmt(e["foreign_cores"], ".2f"),
                ]
            )
        lines += [f"## Convergence, N = {n:,}", ""]
        lines += _table(
            [
                "controller",
                "objects/s",
                "÷ raw",
                "objects/s after 1st write",
                "÷ raw",
                "ours ÷ this",
                "converged (s)",
                "first write (s)",
                "CPU s / 1000",
                "API server + etcd CPU s / 1000",
                "other load (cores)",
            ],
            rows,
        )
        lines += [""]

    if summary["latency"]:
        lines += _latency(summary["latency"], meta)
    lines += ["## Memory and startup", ""]
    ns = summary["ns"]
    rows = []
    for c in controllers:
        if c == RAW:
            continue
        row = [c]
        row += [_fmt(_mib(conv[c][n]["rss_bytes"]), ".1f") for n in ns]
        row += [_fmt(_mib(conv[c][ns[-1]]["hwm_bytes"]), ".1f")]
        per_obj = summary["bytes_per_object"].get(c)
        row += [_fmt(per_obj / KIB if per_obj is not None else None, ".2f")]
        row += [_fmt(conv[c][ns[-1]]["startup_s"], ".2f")]
        row += [_fmt(conv[c][ns[-1]]["readyz_s"], ".2f")]
        rows.append(row)
    header = ["controller"]
    header += [f"RSS MiB, N={n:,}" for n in ns]
    header += [f"peak RSS MiB, N={ns[-1]:,}", "KiB / cached object"]
    header += [f"first write (s), N={ns[-1]:,}", f"/readyz (s), N={ns[-1]:,}"]
    lines += _table(header, rows)
    lines += [
        "",
        "KiB / cached object is the slope of RSS between the smallest and largest N "
        "(needs two values of --n). RSS is read after convergence and "
        f"{meta['settle']} s of quiet.",
        "",
    ]
    lines += _goals(summary)
    return "\n".join(lines) + "\n"


def _latency(latency: dict[str, dict[int, dict[str, Any]]], meta: dict[str, Any]) -> list[str]:
    entries = [(c, n, e) for c, per_n in latency.items() for n, e in per_n.items()]
    lines = [f"## Steady-state latency ({meta['latency']})", ""]
    counts = "; ".join(
        f"{c}: {e['writes']:,} KAITO writes = {e['flips']:,} flips + {e['same_state']:,} same-state"
        for c, _, e in entries
    )
    lines += [f"Writes (summed over runs): {counts}.", ""]
    rows = []
    floor = [e["floor_p50_ms"] for _, _, e in entries if e["floor_p50_ms"] is not None]
    for c, n, e in entries:
        rows.append(
            [
                f"{c}{_status(e)}",
                f"{n:,}",
                _fmt(e["p50_ms"], ".1f"),
                _fmt(e["p90_ms"], ".1f"),
                _fmt(e["p99_ms"], ".1f"),
                _fmt(e["cpu_per_1000"], ".2f"),
                _fmt(e["rate"], ".1f"),
                f"{e['timeouts']} / {e['unrestored']}",
                str(e["conflicts"]),
                _fmt(e["foreign_cores"], ".2f"),
            ]
        )
    if floor:
        rows.append(
            ["(watch delivery floor)", "", _fmt(statistics.median(floor), ".1f")] + [""] * 7
        )
    lines += _table(
        ["controller", "N", "condition → state p50 ms", "p90 ms", "p99 ms",
         "CPU s / 1000 KAITO writes", "KAITO writes/s", "unanswered flips / unrestored",
         "KAITO 409s", "other load (cores)"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "Condition → state: from the response to KAITO's PUT of a flip to the new "
        "status.status on the harness's watch. The floor is the same watch delivering "
        "the condition write itself.",
        "",
        "### Blank window",
        "",
    ]
    rows = [
        [
            f"{c}{_status(e)}",
            f"{n:,}",
            _fmt(e["restore_p50_ms"], ".1f"),
            _fmt(e["restore_p90_ms"], ".1f"),
            _fmt(e["restore_p99_ms"], ".1f"),
            _fmt(e["restore_max_ms"], ".1f"),
            _fmt(e["flip_blank_p50_ms"], ".1f"),
            _fmt(e["flip_blank_p99_ms"], ".1f"),
            _fmt(e["flip_blank_max_ms"], ".1f"),
            _fmt(e["p99_ms"], ".1f"),
            _fmt(e["restore_over_decide_p99"], ".2f", "×"),
        ]
        for c, n, e in entries
    ]
    lines += _table(
        ["controller", "N", "restore p50 ms", "p90 ms", "p99 ms", "max ms",
         "flip blank p50 ms", "p99 ms", "max ms", "decide p99 ms", "restore p99 ÷ decide p99"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "Every KAITO status PUT drops status.status (its Go type has no such field). The "
        "blank window runs from the harness's watch delivering the version without the "
        "field to the first version that has it again. *restore*: after a write that "
        "keeps the state (KAITO's reconcile-error suffix on the condition messages, on or "
        "off), where putting the field back is the controller's only work; *flip blank*: "
        "after a write that changes the state, ended by the new one. *decide* is the "
        "condition → state p99 above. max is the median over runs of each run's maximum.",
        "",
    ]
    return lines


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


def _goals(summary: dict[str, Any]) -> list[str]:
    conv = summary["convergence"]
    ns = summary["ns"]
    n = ns[-1]
    get: Callable[[str, str], float | None] = lambda c, f: conv.get(c, {}).get(n, {}).get(f)  # noqa: E731
    ours_rate = get(OURS, "objects_per_s")
    lines = [f"## Against the goals (N = {n:,})", ""]
    lines.append(
        f"- API server limit: ours reaches {_ratio(ours_rate, get(RAW, 'objects_per_s'))} of the "
        "raw limit end to end, "
        f"{_ratio(get(OURS, 'processing_per_s'), get(RAW, 'processing_per_s'))} after its first "
        "write."
    )
    go_rate = get(CONTROLLER_RUNTIME, "objects_per_s")
    lines.append(f"- controller-runtime: ours ÷ Go = {_ratio(ours_rate, go_rate)} in objects/s.")
    kopf_rate = get(KOPF, "objects_per_s")
    lines.append(f"- kopf: ours ÷ kopf = {_ratio(ours_rate, kopf_rate)} in objects/s.")
    ours_mem = summary["bytes_per_object"].get(OURS)
    go_mem = summary["bytes_per_object"].get(CONTROLLER_RUNTIME)
    if ours_mem is not None:
        lines.append(
            f"- memory: ours holds {ours_mem / KIB:.2f} KiB per cached workspace (target ≤ 4 KiB"
            f"; Go: {_fmt(go_mem / KIB if go_mem is not None else None, '.2f')} KiB)."
        )
    return [*lines, ""]
