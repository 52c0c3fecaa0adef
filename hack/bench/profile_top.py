"""Summarizes a py-spy raw profile (``hack/bench/run --profile``) as two tables: where
the samples are spent inclusively, per function and per source file, and where they
are spent exclusively (the leaf frames).

Run: python3 hack/bench/profile_top.py bench-results/latest/profiles/ours-….pyspy.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# Leaf frames where a thread waits rather than works (py-spy --nonblocking cannot always
# tell); left out unless --keep-idle, so percentages are of CPU actually spent.
_IDLE_LEAVES = (
    "select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",
    "wait (threading.py)",
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")
_PREFIXES = ("/site-packages/", "/lib/python3", "/work/main/")


def _short(path: str) -> str:
    for prefix in _PREFIXES:
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "?"
    file = _short(m["file"])
    return f"{m['func']} ({file})", file


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep-idle", action="store_true", help="count waiting threads too")
    a = p.parse_args()
    inclusive: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = idle = 0
    for line in a.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse(f) for f in stack.split(";") if f]
        if not a.keep_idle and frames and frames[-1][0].endswith(_IDLE_LEAVES):
            idle += count
            continue
        for func in {f for f, _ in frames}:
            inclusive[func] += count
        for file in {file for _, file in frames}:
            by_file[file] += count
        if frames:
            leaf[frames[-1][0]] += count
        total += count
    if not total:
        print("no samples")
        return 1
    print(f"{total:,} samples of work ({idle:,} of waiting threads left out)\n")
    for title, counter in (
        ("inclusive, by function", inclusive),
        ("inclusive, by file", by_file),
        ("exclusive (leaf), by function", leaf),
    ):
        print(f"| {title} | % of samples |\n|---|---|")
        for name, count in counter.most_common(a.top):
            print(f"| `{name}` | {100 * count / total:.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
