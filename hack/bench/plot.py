"""Plots a benchmark result: latency and blank-window distributions (ECDF) and
convergence throughput.

Runs in the bench venv (matplotlib lives there, not in the project's):
    .cache/bench/venv/bin/python hack/bench/plot.py bench-results/latest/results.json
writes latency.png next to the JSON.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib  # type: ignore[import-not-found]  # in the bench venv only

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]

ORDER = ("raw", "ours", "controller-runtime", "kopf")
COLORS = {"raw": "#7f7f7f", "ours": "#1f77b4", "controller-runtime": "#2ca02c", "kopf": "#d62728"}


def main(path: Path) -> Path:
    result = json.loads(path.read_text())
    samples: dict[str, list[float]] = defaultdict(list)
    restores: dict[str, list[float]] = defaultdict(list)
    floor: list[float] = []
    for row in result["latency"]:
        samples[row["controller"]] += row["samples_ms"]
        restores[row["controller"]] += row.get("restore_samples_ms", [])
        floor += row["floor_samples_ms"]
    # JSON keys: N is a string there.
    rates: dict[str, dict[str, dict[str, float | None]]] = result["summary"]["convergence"]

    fig, (ax_lat, ax_rate) = plt.subplots(1, 2, figsize=(13, 5))
    for name in ORDER:
        values = sorted(samples.get(name, []))
        if not values:
            continue
        ys = [(i + 1) / len(values) for i in range(len(values))]
        ax_lat.step(values, ys, where="post", label=f"{name} (n={len(values):,})",
                    color=COLORS[name])  # fmt: skip
        values = sorted(restores.get(name, []))
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax_lat.step(values, ys, where="post", label=f"{name}, restore blank window",
                        color=COLORS[name], linestyle="--")  # fmt: skip
    if floor:
        values = sorted(floor)
        ys = [(i + 1) / len(values) for i in range(len(values))]
        ax_lat.step(values, ys, where="post", label="watch delivery floor", color="black",
                    linestyle=":")  # fmt: skip
    ax_lat.set_xscale("log")
    ax_lat.set_xlabel(
        "flip: KAITO's write → new status.status; dashed: status.status missing (ms, log)"
    )
    ax_lat.set_ylabel("fraction of writes")
    ax_lat.set_title(f"Steady-state latency ({result['meta']['latency']})")
    for q in (0.5, 0.9, 0.99):
        ax_lat.axhline(q, color="#cccccc", linewidth=0.8)
    ax_lat.legend(loc="upper left")
    ax_lat.grid(True, which="both", axis="x", color="#eeeeee")

    ns = result["summary"]["ns"]
    names = [c for c in ORDER if c in rates]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        heights = [rates[name][str(n)]["objects_per_s"] or 0 for n in ns]
        xs = [j + i * width for j in range(len(ns))]
        ax_rate.bar(xs, heights, width, label=name, color=COLORS[name])
    ax_rate.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(ns))])
    ax_rate.set_xticklabels([f"N={n:,}" for n in ns])
    ax_rate.set_ylabel("workspaces converged per second (end to end)")
    ax_rate.set_title("Convergence throughput")
    ax_rate.legend()
    fig.suptitle(result["meta"]["machine"], fontsize=9)
    fig.tight_layout()
    out = path.with_name("latency.png")
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
