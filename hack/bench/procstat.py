"""What /proc says about a process: CPU seconds, resident memory and its peak."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_seconds: float  # utime + stime
    rss_bytes: int  # VmRSS
    hwm_bytes: int  # VmHWM: the peak RSS so far


def sample(pid: int) -> Sample:
    """Raises OSError when the process is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may itself hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return Sample((utime + stime) / _TICKS, rss, hwm)


def cpu_seconds(pid: int) -> float:
    try:
        return sample(pid).cpu_seconds
    except OSError:
        return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


class ForeignLoad:
    """Cores kept busy by processes other than ``pids`` since the meter was made.

    The benchmark shares a 2-core machine with whatever else runs there (other test
    suites, builds); a measurement taken while they run is flagged, not trusted.
    """

    def __init__(self, pids: list[int]) -> None:
        self._pids = list(pids)
        self._last: dict[int, float] = {}
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_seconds()
        self._own0 = self._own()

    def add(self, pid: int) -> None:
        """Count ``pid`` as ours from now on (a process started after the meter)."""
        self._pids.append(pid)
        self._own0 += self._cpu(pid)

    def _cpu(self, pid: int) -> float:
        value = cpu_seconds(pid)
        if value == value:  # not NaN: the process is alive
            self._last[pid] = value
        return self._last.get(pid, 0.0)

    def _own(self) -> float:
        return sum(self._cpu(p) for p in self._pids)

    def cores(self) -> float:
        elapsed = time.monotonic() - self._t0
        if elapsed <= 0:
            return 0.0
        foreign = (machine_busy_seconds() - self._busy0) - (self._own() - self._own0)
        return max(0.0, foreign / elapsed)
