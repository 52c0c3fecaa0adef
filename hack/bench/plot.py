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
from typing import Any

import matplotlib  # type: ignore[import-not-found]  # in the bench venv only

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]

ORDER = ("raw", "ours", "controller-runtime", "kopf")
COLORS = {"raw": "#7f7f7f", "ours": "#1f77b4", "controller-runtime": "#2ca02c", "kopf": "#d62728"}


def _ecdf(ax: Any, values: list[float], **style: Any) -> None:
    values = sorted(values)
    ys = [(i + 1) / len(values) for i in range(len(values))]
    ax.step(values, ys, where="post", **style)


def main(path: Path) -> Path:
    result = json.loads(path.read_text())
    # (rate, controller) → samples; rows of runs before rates were recorded: rate 0.
    samples: dict[tuple[float, str], list[float]] = defaultdict(list)
    restores: dict[tuple[float, str], list[float]] = defaultdict(list)
    floor: dict[float, list[float]] = defaultdict(list)
    for row in result["latency"]:
        rate = row.get("target_rate") or 0.0
        samples[rate, row["controller"]] += row["samples_ms"]
        restores[rate, row["controller"]] += row.get("restore_samples_ms", [])
        floor[rate] += row["floor_samples_ms"]
    rates = sorted({rate for rate, _ in samples})
    # JSON keys: N is a string there.
    rates_by_n: dict[str, dict[str, dict[str, float | None]]] = result["summary"]["convergence"]

    fig, grid = plt.subplots(1, len(rates) + 1, figsize=(6.5 * (len(rates) + 1), 5), squeeze=False)
    axes = list(grid[0])
    for ax_lat, rate in zip(axes[:-1], rates, strict=True):
        for name in ORDER:
            values = samples.get((rate, name), [])
            if values:
                _ecdf(ax_lat, values, label=f"{name} (n={len(values):,})", color=COLORS[name])
            values = restores.get((rate, name), [])
            if values:
                _ecdf(ax_lat, values, label=f"{name}, blank window after a restore",
                      color=COLORS[name], linestyle="--")  # fmt: skip
        if floor[rate]:
            _ecdf(ax_lat, floor[rate], label="watch delivery floor", color="black",
                  linestyle=":")  # fmt: skip
        ax_lat.set_xscale("log")
        ax_lat.set_xlabel(
            "flip: KAITO's write → new status.status; dashed: status.status missing (ms, log)"
        )
        ax_lat.set_ylabel("fraction of writes")
        n = result["meta"].get("latency_n")
        ax_lat.set_title(f"{rate:g} KAITO writes/s" + (f", N={n:,}" if n else ""))
        for q in (0.5, 0.9, 0.99):
            ax_lat.axhline(q, color="#cccccc", linewidth=0.8)
        ax_lat.legend(loc="upper left", fontsize=8)
        ax_lat.grid(True, which="both", axis="x", color="#eeeeee")

    ax_rate = axes[-1]
    ns = result["summary"]["ns"]
    names = [c for c in ORDER if c in rates_by_n]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        heights = [rates_by_n[name][str(n)]["objects_per_s"] or 0 for n in ns]
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
