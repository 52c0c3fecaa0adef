"""Medians over runs, ratios, and the Markdown tables of a benchmark result."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from hack.bench.contenders import ALL, BASELINE, CONTROLLER_RUNTIME, KOPF, OURS, RAW

Row = dict[str, Any]
KIB = 1024
MIB = 1024 * 1024


def median_of(rows: Iterable[Row], field: str) -> float | None:
    """The median over the runs that succeeded; if none did, over all of them (a phase
    that failed, say a write rate past what the machine can serve, still shows what it
    measured, marked failed)."""
    rows = list(rows)
    ok = [r for r in rows if r.get("ok")] or rows
    values = [r[field] for r in ok if r.get(field) is not None]
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
    "events_per_1000",
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
        "raw_list_s",
        "startup_over_list",
        "readyz_s",
        "converged_s",
        "cpu_per_1000",
        "cpu_total_s",
        "rss_bytes",
        "hwm_bytes",
        "apiserver_cpu_per_1000",
        "events_per_1000",
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
    # One entry per controller, N and asked-for rate (rows without one: an older run).
    lat: list[dict[str, Any]] = []
    phases = sorted({(r["n"], r.get("target_rate") or 0.0) for r in latency})
    for c in controllers:
        for n, rate in phases:
            rows = [r for r in _select(latency, c, n) if (r.get("target_rate") or 0.0) == rate]
            if not rows:
                continue
            entry = {"controller": c, "n": n, "target_rate": rate}
            entry |= {f: median_of(rows, f) for f in _LATENCY_MEDIANS}
            entry |= {f: sum(r.get(f, 0) for r in rows) for f in _LATENCY_SUMS}
            entry["runs"] = len(rows)
            entry["failed"] = sum(1 for r in rows if not r["ok"])
            lat.append(entry)
    memory: dict[str, float | None] = {}
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        for c in controllers:
            a, b = conv[c][lo]["rss_bytes"], conv[c][hi]["rss_bytes"]
            memory[c] = (b - a) / (hi - lo) if a is not None and b is not None else None
    return {"ns": ns, "controllers": controllers, "convergence": conv, "latency": lat,
            "bytes_per_object": memory, "paired": _pairs(convergence, latency)}  # fmt: skip


def _pairs(convergence: list[Row], latency: list[Row]) -> list[dict[str, Any]]:
    """Ours beside the baseline, run by run: each phase's CPU per 1,000 and the other
    load while each was measured."""
    out: list[dict[str, Any]] = []
    phases: list[tuple[str, list[Row], Callable[[Row], tuple[Any, ...]]]] = [
        ("convergence", convergence, lambda r: (r["n"], 0.0, r["run"])),
        ("latency", latency, lambda r: (r["n"], r.get("target_rate") or 0.0, r["run"])),
    ]
    for phase, rows, key in phases:
        base = {key(r): r for r in rows if r["controller"] == BASELINE and r["ok"]}
        for r in rows:
            b = base.get(key(r))
            if r["controller"] != OURS or not r["ok"] or b is None:
                continue
            n, rate, run = key(r)
            out.append(
                {"phase": phase, "n": n, "rate": rate, "run": run,
                 "cpu_per_1000": r["cpu_per_1000"], "baseline_cpu_per_1000": b["cpu_per_1000"],
                 "foreign_cores": r["foreign_cores"],
                 "baseline_foreign_cores": b["foreign_cores"]}
            )  # fmt: skip
    return out


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
                    _fmt(e["events_per_1000"], ".0f"),
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
                "Events written / 1000",
                "other load (cores)",
            ],
            rows,
        )
        lines += [""]

    if summary["latency"]:
        lines += _latency(summary["latency"], meta)
    lines += _memory_and_startup(summary, meta)
    if summary.get("paired"):
        lines += _paired(summary["paired"], meta)
    lines += _goals(summary)
    return "\n".join(lines) + "\n"


def _memory_and_startup(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    conv = summary["convergence"]
    rows = []
    for c in summary["controllers"]:
        if c == RAW:
            continue
        for n in summary["ns"]:
            e = conv[c][n]
            rows.append(
                [
                    f"{c}{_status(e)}",
                    f"{n:,}",
                    _fmt(_mib(e["rss_bytes"]), ".1f"),
                    _fmt(_mib(e["hwm_bytes"]), ".1f"),
                    _fmt(e["startup_s"], ".2f"),
                    _fmt(e["readyz_s"], ".2f"),
                    _fmt(e["raw_list_s"], ".2f"),
                    _fmt(e["startup_over_list"], ".2f", "×"),
                ]
            )
    lines = ["## Memory and startup", ""]
    lines += _table(
        ["controller", "N", "RSS MiB", "peak RSS MiB", "first write (s)", "/readyz (s)",
         "raw list (s)", "first write ÷ raw list"],
        rows,
    )  # fmt: skip
    per_object = [
        f"{c} {_fmt(b / KIB if b is not None else None, '.2f')} KiB"
        for c, b in summary["bytes_per_object"].items()
        if c != RAW
    ]
    lines += [
        "",
        f"RSS is read after convergence and {meta['settle']} s of quiet; the peak is the "
        "process's high-water mark (VmHWM) by then. *first write*: from the spawn to the "
        "first status.status on the harness's watch, so it holds the process start, "
        "the list, the cache sync and the first reconcile. *raw list*: a paginated LIST "
        "of every workspace (500 a page, each page read and decoded), timed by the "
        "harness just before that spawn: the part no controller can skip.",
        "",
    ]
    if per_object:
        ns = summary["ns"]
        lines += [
            f"Memory per cached workspace (the slope of RSS from N={ns[0]:,} to "
            f"N={ns[-1]:,}): " + ", ".join(per_object) + ".",
            "",
        ]
    return lines


def _paired(pairs: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    lines = [f"## Ours beside the baseline ({meta.get('baseline')})", ""]
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for p in pairs:
        groups.setdefault((p["phase"], p["n"], p["rate"]), []).append(p)
    rows = []
    for (phase, n, rate), ps in groups.items():
        ours = statistics.median(p["cpu_per_1000"] for p in ps)
        base = statistics.median(p["baseline_cpu_per_1000"] for p in ps)
        runs = ", ".join(f"{p['baseline_cpu_per_1000']:.2f} → {p['cpu_per_1000']:.2f}" for p in ps)
        load = max(max(p["foreign_cores"] or 0.0, p["baseline_foreign_cores"] or 0.0) for p in ps)
        what = f"{phase}, N={n:,}" + (f", {rate:g} KAITO writes/s" if phase == "latency" else "")
        rows.append(
            [what, str(len(ps)), f"{base:.2f}", f"{ours:.2f}", _ratio(ours, base), runs,
             f"{load:.2f}"]
        )  # fmt: skip
    lines += _table(
        ["phase", "pairs", "baseline CPU s / 1000", "ours", "ours ÷ baseline",
         "each pair (baseline → ours)", "max other load (cores)"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "CPU s per 1,000 workspaces converged (convergence) or per 1,000 KAITO writes "
        "(latency), medians over the pairs; within a run the two start one after the "
        "other on the same workspaces, in alternating order.",
        "",
    ]
    return lines


def _latency(latency: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    lines = [f"## Steady-state latency and the blank window ({meta['latency']})", ""]
    counts = "; ".join(
        f"{e['controller']} at {e['target_rate']:g}/s: {e['writes']:,} KAITO writes = "
        f"{e['flips']:,} flips + {e['same_state']:,} same-state"
        for e in latency
    )
    lines += [f"Writes (summed over runs): {counts}.", ""]
    rows = [
        [
            f"{e['controller']}{_status(e)}",
            f"{e['n']:,}",
            _fmt(e["target_rate"], "g"),
            _fmt(e["p50_ms"], ".1f"),
            _fmt(e["p90_ms"], ".1f"),
            _fmt(e["p99_ms"], ".1f"),
            _fmt(e["restore_p50_ms"], ".1f"),
            _fmt(e["restore_p90_ms"], ".1f"),
            _fmt(e["restore_p99_ms"], ".1f"),
            _fmt(e["restore_max_ms"], ".1f"),
            _fmt(e["flip_blank_p99_ms"], ".1f"),
            _fmt(e["restore_over_decide_p99"], ".2f", "×"),
            _fmt(e["cpu_per_1000"], ".2f"),
            _fmt(e["events_per_1000"], ".0f"),
            _fmt(e["rate"], ".1f"),
            f"{e['timeouts']} / {e['unrestored']}",
            str(e["conflicts"]),
            _fmt(e["foreign_cores"], ".2f"),
        ]
        for e in latency
    ]
    floor = [e["floor_p50_ms"] for e in latency if e["floor_p50_ms"] is not None]
    if floor:
        rows.append(
            ["(watch delivery floor)", "", "", _fmt(statistics.median(floor), ".1f")] + [""] * 14
        )
    lines += _table(
        ["controller", "N", "KAITO writes/s", "condition → state p50 ms", "p90 ms", "p99 ms",
         "blank window after a restore p50 ms", "p90 ms", "p99 ms", "max ms",
         "after a flip p99 ms", "restore p99 ÷ decide p99", "CPU s / 1000 KAITO writes",
         "Events written / 1000 KAITO writes", "achieved writes/s",
         "unanswered flips / unrestored", "KAITO 409s", "other load (cores)"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "Condition → state (*decide*): from the response to KAITO's PUT of a flip to the "
        "new status.status on the harness's watch; the floor is the same watch "
        "delivering the condition write itself. Every KAITO status PUT drops "
        "status.status (its Go type has no such field): the blank window runs from the "
        "watch delivering the version without the field to the first version that has "
        "it again, *after a restore* when the write kept the state (KAITO's "
        "reconcile-error suffix on the condition messages, on or off), so that putting "
        "the field back is the controller's only work, and *after a flip* when the new "
        "state ends it. max is the median over runs of each run's maximum.",
        "",
    ]
    return lines


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


# The performance issue's goals.
RAW_SHARE_GOAL = 0.9  # convergence, ours ÷ raw, at every N
LARGE_N = 100_000  # the point where memory and startup are judged
RSS_GOAL_MIB = 512.0
STARTUP_OVER_LIST_GOAL = 1.5


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def _at_most(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def _goals(summary: dict[str, Any]) -> list[str]:
    conv = summary["convergence"]

    def get(c: str, n: int, f: str) -> float | None:
        value: float | None = conv.get(c, {}).get(n, {}).get(f)
        return value

    lines = ["## Against the goals", ""]
    go = CONTROLLER_RUNTIME
    for n in summary["ns"]:
        ours, raw = get(OURS, n, "objects_per_s"), get(RAW, n, "objects_per_s")
        share = None if ours is None or not raw else ours / raw >= RAW_SHARE_GOAL
        cpu, go_cpu = get(OURS, n, "cpu_per_1000"), get(go, n, "cpu_per_1000")
        lines.append(
            f"- N={n:,}: convergence ours ÷ raw {_ratio(ours, raw)} "
            f"(≥ {RAW_SHARE_GOAL:.1f}×: {_verdict(share)}), ours ÷ controller-runtime "
            f"{_ratio(ours, get(go, n, 'objects_per_s'))}, ours ÷ kopf "
            f"{_ratio(ours, get(KOPF, n, 'objects_per_s'))}; CPU s per 1,000 reconciles "
            f"ours {_fmt(cpu, '.2f')} vs controller-runtime {_fmt(go_cpu, '.2f')} "
            f"(≤: {_verdict(_at_most(cpu, go_cpu))})."
        )
        if n >= LARGE_N and OURS in conv:
            converged = not conv[OURS][n].get("failed") and ours is not None
            peak = _mib(get(OURS, n, "hwm_bytes"))
            ratio = get(OURS, n, "startup_over_list")
            lines.append(
                f"- N={n:,}: ours {'converged' if converged else '**did not converge**'}; "
                f"RSS {_fmt(_mib(get(OURS, n, 'rss_bytes')), '.0f')} MiB, peak "
                f"{_fmt(peak, '.0f')} MiB (≤ {RSS_GOAL_MIB:.0f} MiB: "
                f"{_verdict(_at_most(peak, RSS_GOAL_MIB))}); first write "
                f"{_fmt(get(OURS, n, 'startup_s'), '.1f')} s = {_fmt(ratio, '.2f', '×')} the "
                f"raw list's {_fmt(get(OURS, n, 'raw_list_s'), '.1f')} s "
                f"(≤ {STARTUP_OVER_LIST_GOAL}×: "
                f"{_verdict(_at_most(ratio, STARTUP_OVER_LIST_GOAL))}); controller-runtime: "
                f"RSS {_fmt(_mib(get(go, n, 'rss_bytes')), '.0f')} MiB, peak "
                f"{_fmt(_mib(get(go, n, 'hwm_bytes')), '.0f')} MiB, first write "
                f"{_fmt(get(go, n, 'startup_s'), '.1f')} s "
                f"({_fmt(get(go, n, 'startup_over_list'), '.2f', '×')} its raw list)."
            )
    by_phase = {(e["controller"], e["n"], e["target_rate"]): e for e in summary["latency"]}
    for (c, n, rate), e in by_phase.items():
        peer = by_phase.get((CONTROLLER_RUNTIME, n, rate))
        if c != OURS or peer is None:
            continue
        quantiles = ("p50_ms", "p90_ms", "p99_ms")
        ours_q = " / ".join(_fmt(e[q], ".1f") for q in quantiles)
        go_q = " / ".join(_fmt(peer[q], ".1f") for q in quantiles)
        checks = [_at_most(e[q], peer[q]) for q in quantiles]
        ok = None if None in checks else all(checks)
        lines.append(
            f"- {rate:g} KAITO writes/s ({rate / 2:g} flips/s), N={n:,}: condition → state "
            f"p50/p90/p99 ours {ours_q} ms vs controller-runtime {go_q} ms "
            f"(≤: {_verdict(ok)}); CPU s per 1,000 KAITO writes ours "
            f"{_fmt(e['cpu_per_1000'], '.2f')} vs {_fmt(peer['cpu_per_1000'], '.2f')} "
            f"(≤: {_verdict(_at_most(e['cpu_per_1000'], peer['cpu_per_1000']))})."
        )
    ours_mem = summary["bytes_per_object"].get(OURS)
    go_mem = summary["bytes_per_object"].get(CONTROLLER_RUNTIME)
    if ours_mem is not None:
        lines.append(
            f"- memory: ours holds {ours_mem / KIB:.2f} KiB per cached workspace (target ≤ 4 KiB"
            f"; Go: {_fmt(go_mem / KIB if go_mem is not None else None, '.2f')} KiB)."
        )
    return [*lines, ""]
