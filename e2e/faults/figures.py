"""The figures the fault suite measures, rendered as Markdown tables.

Each scenario adds one row; the bad-input test adds one row per case. The report is
rewritten on every addition (so it survives an aborted run) and printed at the end of
the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class ScenarioFigure:
    scenario: str
    load: str
    faults: str
    convergence: str
    illegal_transitions: int
    lost_updates: int
    crashes: int
    notes: str = ""


@dataclass(frozen=True)
class BadInputFigure:
    case: str
    input: str
    outcome: str
    operator_up: bool
    canary_converged_s: float


def _table(rows: Sequence[object]) -> str:
    if not rows:
        return ""
    header = [f.name.replace("_", " ") for f in fields(rows[0])]  # type: ignore[arg-type]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(v).replace("|", "\\|").replace("\n", " ") for v in astuple(row)]  # type: ignore[call-overload]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Figures:
    path: Path
    scenarios: list[ScenarioFigure] = field(default_factory=list)
    bad_input: list[BadInputFigure] = field(default_factory=list)

    def add(self, figure: ScenarioFigure | BadInputFigure) -> None:
        if isinstance(figure, ScenarioFigure):
            self.scenarios.append(figure)
        else:
            self.bad_input.append(figure)
        print(figure)
        self.path.write_text(self.render())

    def render(self) -> str:
        parts = []
        if self.scenarios:
            parts += ["## Fault scenarios", "", _table(self.scenarios), ""]
        if self.bad_input:
            parts += ["## Bad input", "", _table(self.bad_input), ""]
        return "\n".join(parts)
