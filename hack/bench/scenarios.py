"""One controller through one run: convergence (which also yields startup, CPU and
memory), then, for the controllers that watch, the steady-state latency phase: KAITO's
status writes at a fixed rate, alternately ones that change the state (flips) and ones
that keep it, each of which drops status.status until the controller writes it back."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson

from controllers.workspace.reconciler import WORKSPACE
from e2e.kaito import KaitoWriter
from hack.bench import contenders, procstat, workload
from hack.bench.contenders import RAW, Launch, Process
from hack.bench.observer import StateObserver
from reconciler.client import Client
from reconciler.envtest.oplog import served_ports
from reconciler.errors import ApiError, TransportError
from reconciler.resource import CORE_EVENT

READYZ_POLL = 0.02
QUIET_WINDOW = 2.0
LIST_PAGE = 500  # ours' and client-go's page size


def convergence_timeout(n: int) -> float:
    """Seconds a contender gets to converge ``n`` workspaces: a minute to start, then
    20 objects/s, a tenth of what the slowest contender reaches on a 2-core machine."""
    return 60.0 + 0.05 * n


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def wait_quiet(pids: list[int], s: Settings) -> float:
    """Wait until processes other than ``pids`` leave the machine's cores alone.

    Returns the seconds waited. Gives up after ``quiet_timeout`` (the measurement then
    records how loaded the machine was).
    """
    began = time.monotonic()
    told = False
    while True:
        meter = procstat.ForeignLoad(pids)
        await anyio.sleep(QUIET_WINDOW)
        cores = meter.cores()
        waited = time.monotonic() - began
        if cores < s.quiet_cores:
            if told:
                log(f"machine quiet after {waited:.0f}s")
            return waited
        if waited > s.quiet_timeout:
            log(f"machine still busy ({cores:.2f} cores) after {waited:.0f}s; measuring anyway")
            return waited
        if not told:
            log(f"other processes use {cores:.2f} cores; waiting for a quiet machine")
            told = True


@dataclass
class Settings:
    workers: int
    settle: float  # seconds of quiet after convergence before memory is read
    latency_rates: tuple[float, ...]  # KAITO status writes per second, one phase each
    latency_duration: float  # seconds per rate
    flip_timeout: float  # a write not answered by then counts as a failure
    profile: bool  # py-spy record ours during convergence and each latency phase
    out: Path
    quiet_cores: float = 0.25  # start only when other processes use less than this
    quiet_timeout: float = 900.0  # then start anyway; the result says how loaded it was
    ours_args: tuple[str, ...] = ()  # extra flags for ours (experiments)
    baseline: Path | None = None  # the checkout the baseline contender runs from


@dataclass
class Convergence:
    controller: str
    n: int
    run: int
    ok: bool = False
    error: str = ""
    startup_s: float | None = None  # spawn → first status.status seen on the watch
    # A paginated LIST of every workspace (500 a page, as the contenders list), timed by
    # the harness just before the spawn: what no controller's start can beat.
    raw_list_s: float | None = None
    startup_over_list: float | None = None  # startup_s / raw_list_s
    readyz_s: float | None = None  # spawn → /readyz 200 (ours only)
    converged_s: float | None = None  # spawn → last workspace in its state
    objects_per_s: float | None = None  # n / converged_s
    processing_per_s: float | None = None  # after the first write: (n - 1) / span
    cpu_total_s: float | None = None  # controller CPU, spawn → settled
    cpu_bulk_s: float | None = None  # controller CPU, first write → settled
    cpu_per_1000: float | None = None  # cpu_bulk_s per 1,000 workspaces converged
    rss_bytes: int | None = None  # after settling
    hwm_bytes: int | None = None  # peak RSS
    apiserver_cpu_per_1000: float | None = None  # kube-apiserver + etcd, first write → done
    # core/v1 Events the contender wrote from its spawn until it settled, per 1,000
    # workspaces: ours writes one per state change, which the peers do not.
    events_per_1000: float | None = None
    foreign_cores: float | None = None  # other processes' load during the measurement
    waited_quiet_s: float = 0.0  # how long the start waited for the machine to be quiet


@dataclass
class Latency:
    controller: str
    n: int
    run: int
    target_rate: float = 0.0  # KAITO writes per second asked for
    ok: bool = False
    error: str = ""
    writes: int = 0  # KAITO status writes started: flips + same_state
    flips: int = 0  # writes that change the state (Ready ↔ NotReady, Pending → Ready)
    same_state: int = 0  # writes that keep it (KAITO's reconcile-error suffix on or off)
    timeouts: int = 0  # flips whose new state never showed on the watch
    unrestored: int = 0  # same-state writes after which status.status never came back
    skipped: int = 0  # writes not made: no idle workspace, or nothing to change
    unchanged: int = 0  # of those, KAITO found nothing to change (the harness's mistake)
    rate: float = 0.0  # KAITO writes per second achieved
    # Condition → state: from the flip's PUT response to the new state on the watch.
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    floor_p50_ms: float | None = None  # the harness's own watch seeing its condition write
    # The blank window after a same-state write: from the watch delivering the version
    # without status.status to it delivering the restored one (the operator's only work).
    restore_p50_ms: float | None = None
    restore_p90_ms: float | None = None
    restore_p99_ms: float | None = None
    restore_max_ms: float | None = None
    # The same window after a flip (it ends with the new state).
    flip_blank_p50_ms: float | None = None
    flip_blank_p90_ms: float | None = None
    flip_blank_p99_ms: float | None = None
    flip_blank_max_ms: float | None = None
    restore_over_decide_p99: float | None = None  # restore p99 / condition → state p99
    disappearances: int = 0  # versions without status.status the watch delivered
    conflicts: int = 0  # 409s the KAITO writer met (someone wrote between its GET and PUT)
    retries: int = 0  # its DefaultRetry attempts after a 409 (or 429/503/ServerTimeout)
    cpu_per_1000: float | None = None  # controller CPU per 1,000 KAITO writes
    events_per_1000: float | None = None  # Events the controller wrote per 1,000 writes
    foreign_cores: float | None = None  # other processes' load during the measurement
    samples_ms: list[float] = field(default_factory=list)
    floor_samples_ms: list[float] = field(default_factory=list)
    restore_samples_ms: list[float] = field(default_factory=list)
    flip_blank_samples_ms: list[float] = field(default_factory=list)


def as_dict(result: Convergence | Latency) -> dict[str, Any]:
    return asdict(result)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[int(q * 1000) - 1]


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _readyz(proc: Process) -> float | None:
    """Seconds from the spawn until ``/readyz`` answered 200 (its port read from the log)."""
    assert proc.log_path is not None
    async with aiohttp.ClientSession() as session:
        while True:
            port = served_ports(proc.log_path, proc.log_offset).get("/readyz")
            if port is not None:
                url = f"http://127.0.0.1:{port}/readyz"
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return time.monotonic() - proc.started_at
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await anyio.sleep(READYZ_POLL)


def write_raw_job(path: Path, observer: StateObserver, expected: dict[workload.Key, str]) -> None:
    """The raw limit's job: per workspace, the JSON patch ours sends for its first state
    after a reset (status.status and the record, preconditioned on the version seen)."""
    now = datetime.now(UTC)
    jobs = [
        {
            "namespace": k.namespace,
            "name": k.name,
            "patch": workload.first_state_patch(
                k, observer.versions[k], observer.generations[k], state, now
            ),
        }
        for k, state in expected.items()
    ]
    path.write_bytes(orjson.dumps(jobs))


def _raw_report(log_path: Path) -> dict[str, Any]:
    for line in reversed(_log_tail(log_path, 5).splitlines()):
        if line.startswith("RESULT "):
            report: dict[str, Any] = orjson.loads(line[len("RESULT ") :])
            return report
    return {}


class _Profiler:
    """py-spy sampling a running process into a collapsed-stack file."""

    def __init__(self, pid: int, out: Path) -> None:
        self._proc = subprocess.Popen(
            [
                str(contenders.BENCH_VENV / "bin" / "py-spy"),
                "record",
                f"--pid={pid}",
                "--rate=250",
                "--nonblocking",
                "--format=raw",
                f"--output={out}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        self._proc.send_signal(2)  # SIGINT: write the profile and exit
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


async def event_counts(client: Client) -> dict[str, int]:
    """uid → count of every core/v1 Event in the benchmark's namespaces. The Events a
    contender wrote in between two of these are the new uids plus the count increases
    (client-go's aggregation patches count). An Event the server expires (after an
    hour) meanwhile only leaves the second snapshot, so it is never counted negative."""
    counts: dict[str, int] = {}
    for ns in workload.NAMESPACES:
        token: str | None = None
        while True:
            page = await client.list(CORE_EVENT, ns, limit=LIST_PAGE, continue_=token)
            for ev in page.get("items") or ():
                counts[ev["metadata"]["uid"]] = int(ev.get("count") or 1)
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                break
    return counts


def events_between(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(max(0, count - before.get(uid, 0)) for uid, count in after.items())


async def time_raw_list(client: Client) -> float:
    """Seconds a paginated LIST of every workspace takes (500 a page, each page read and
    decoded, then dropped): the floor under any controller's start, which must list
    them all before it can decide anything."""
    began = time.monotonic()
    token: str | None = None
    while True:
        page = await client.list(WORKSPACE, limit=LIST_PAGE, continue_=token)
        token = (page.get("metadata") or {}).get("continue") or None
        del page
        if not token:
            return time.monotonic() - began


async def converge(
    name: str,
    run: int,
    client: Client,
    observer: StateObserver,
    expected: dict[workload.Key, str],
    plane_pids: list[int],
    kubeconfig: Path,
    s: Settings,
) -> tuple[Convergence, Process | None]:
    """Start ``name`` and time it until every workspace holds its expected state.

    Returns the still running process (None for the raw limit, which exits when done)
    for the latency phase; the caller stops it.
    """
    n = len(expected)
    result = Convergence(name, n, run)
    tag = f"{name}-n{n}-run{run}"
    launch = Launch(kubeconfig, s.workers, s.out / "logs" / f"{tag}.log")
    if name in contenders.PYTHON:
        launch.extra_args = s.ours_args
    if name == contenders.BASELINE and s.baseline is not None:
        launch.cwd = s.baseline
    if name == RAW:
        launch.job_path = s.out / "logs" / f"{tag}.job.json"
        write_raw_job(launch.job_path, observer, expected)
    own = [os.getpid(), *plane_pids]
    result.waited_quiet_s = await wait_quiet(own, s)
    if name != RAW:
        result.raw_list_s = await time_raw_list(client)
    events_before = await event_counts(client)
    observer.expect(expected)
    plane_cpu0 = sum(procstat.cpu_seconds(p) for p in plane_pids)
    meter = procstat.ForeignLoad(own)
    proc = contenders.start(name, launch)
    meter.add(proc.pid)
    timeout = convergence_timeout(n)
    cpu_first: float | None = None
    plane_first = plane_cpu0
    profiler = None
    if s.profile and name in contenders.PYTHON:
        (s.out / "profiles").mkdir(parents=True, exist_ok=True)
        profiler = _Profiler(proc.pid, s.out / "profiles" / f"{tag}.pyspy.txt")
        meter.add(profiler.pid)

    async def first_write() -> None:
        nonlocal cpu_first, plane_first
        await observer.first_write.wait()
        cpu_first = procstat.cpu_seconds(proc.pid)
        plane_first = sum(procstat.cpu_seconds(p) for p in plane_pids)

    ready = anyio.Event()

    async def readyz() -> None:
        result.readyz_s = await _readyz(proc)
        ready.set()

    try:
        with anyio.move_on_after(timeout) as deadline:
            async with anyio.create_task_group() as tg:

                async def watch_exit() -> None:
                    # Every contender but the raw limit runs until stopped; the raw
                    # limit may only end with success, which the observer sees itself.
                    while True:
                        code = proc.proc.poll()
                        if code is not None and (name != RAW or code != 0):
                            result.error = (
                                f"{name} exited with {code}:\n{_log_tail(launch.log_path)}"
                            )
                            tg.cancel_scope.cancel()
                        await anyio.sleep(0.1)

                tg.start_soon(first_write)
                tg.start_soon(watch_exit)
                if proc.readyz:
                    tg.start_soon(readyz)
                await observer.converged.wait()
                await observer.first_write.wait()
                if proc.readyz:
                    with anyio.move_on_after(5):
                        await ready.wait()
                tg.cancel_scope.cancel()
        if deadline.cancelled_caught and not result.error:
            result.error = (
                f"{name} did not converge in {timeout:.0f}s: {observer.matched}/{n} right; "
                f"e.g. {observer.wrong()}\n{_log_tail(launch.log_path)}"
            )
    finally:
        if profiler is not None:
            profiler.stop()
    if result.error:
        proc.stop()
        return result, None

    assert observer.converged_at is not None
    assert observer.first_write_at is not None
    plane_done = sum(procstat.cpu_seconds(p) for p in plane_pids)
    result.foreign_cores = meter.cores()
    result.ok = True
    result.startup_s = observer.first_write_at - proc.started_at
    if result.raw_list_s:
        result.startup_over_list = result.startup_s / result.raw_list_s
    result.converged_s = observer.converged_at - proc.started_at
    result.objects_per_s = n / result.converged_s
    span = observer.converged_at - observer.first_write_at
    result.processing_per_s = (n - 1) / span if span > 0 and n > 1 else None
    result.apiserver_cpu_per_1000 = (plane_done - plane_first) / n * 1000
    await anyio.sleep(s.settle)
    if name == RAW:
        proc.proc.wait(30)
        report = _raw_report(launch.log_path)
        if report and cpu_first is not None:
            result.cpu_total_s = report["cpu_seconds"]
            result.cpu_bulk_s = report["cpu_seconds"] - cpu_first
            result.cpu_per_1000 = result.cpu_bulk_s / n * 1000
        proc.stop()
        return result, None
    result.events_per_1000 = events_between(events_before, await event_counts(client)) / n * 1000
    sample = proc.sample()
    if sample is not None and cpu_first is not None:
        result.cpu_total_s = sample.cpu_seconds
        result.cpu_bulk_s = sample.cpu_seconds - cpu_first
        result.cpu_per_1000 = result.cpu_bulk_s / n * 1000
        result.rss_bytes = sample.rss_bytes
        result.hwm_bytes = sample.hwm_bytes
    return result, proc


async def measure_latency(
    client: Client,
    proc: Process,
    run: int,
    n: int,
    rate: float,
    observer: StateObserver,
    plane_pids: list[int],
    s: Settings,
    rng: random.Random,
) -> Latency:
    """Write conditions on random inference workspaces at ``rate`` a second, as KAITO writes
    them (GET, then a PUT of the typed status with the read resourceVersion, retried on
    409), alternately flipping the state and keeping it.

    Every such PUT drops status.status. A flip is timed from the PUT's response to the
    new state on the watch; every write's blank window from the watch delivering the
    version without the field to the first version with the expected state. A
    workspace gets its next write only once the last one is answered, so each window is
    one write's.
    """
    result = Latency(proc.name, n, run, target_rate=rate)
    kaito = KaitoWriter(client, field_manager=workload.KAITO_FIELD_MANAGER, deadline=s.flip_timeout)
    busy: set[int] = set()
    # Workspaces whose messages carry KAITO's reconcile-error suffix: the next same-state
    # write takes it off, so that each one changes the typed status (else KAITO, and so
    # the writer, writes nothing). A flip writes plain messages.
    with_error: set[int] = set()
    own = [os.getpid(), *plane_pids, proc.pid]
    await wait_quiet(own, s)
    meter = procstat.ForeignLoad(own)
    profiler = None
    if s.profile and proc.name in contenders.PYTHON:
        (s.out / "profiles").mkdir(parents=True, exist_ok=True)
        out = s.out / "profiles" / f"{proc.name}-n{n}-run{run}-latency{rate:g}.pyspy.txt"
        profiler = _Profiler(proc.pid, out)
        meter.add(profiler.pid)
    events_before = await event_counts(client)
    before = proc.sample()
    disappeared_before = observer.disappearances

    def unanswered(flip: bool, why: str | None = None) -> None:
        if why is not None:
            result.error = why
        if flip:
            result.timeouts += 1
        else:
            result.unrestored += 1

    async def one_write(index: int, flip: bool) -> None:
        key = workload.key_of(index)
        current = observer.states.get(key)
        kind = "flip" if flip else "same-state write"
        try:
            if flip:
                conditions, expected = workload.flip(index, current)
            else:
                add_suffix = index not in with_error
                conditions, expected = workload.same_state(index, current, with_error=add_suffix)
            waiter = observer.wait_for(key, expected, after_blank=not flip)
            answer = await kaito.replace_conditions(key.namespace, key.name, *conditions)
            written_at = time.monotonic()
            # What the workspace's messages carry now, from the server: an earlier write
            # that failed on the way (a timeout under overload) may have landed or not.
            if workload.has_error_suffix((answer.get("status") or {}).get("conditions")):
                with_error.add(index)
            else:
                with_error.discard(index)
            if "status" in (answer.get("status") or {}):
                # A PUT's answer never has the field: this is the object read, unchanged,
                # because the harness's idea of it was out of date. Nothing was written.
                result.skipped += 1
                result.unchanged += 1
                return
            rv = answer["metadata"]["resourceVersion"]
            with anyio.move_on_after(s.flip_timeout):
                await waiter.done.wait()
            if waiter.done_at is None:
                unanswered(flip)
                return
            blank = waiter.blank_s
            if flip:
                result.samples_ms.append(max(0.0, waiter.done_at - written_at) * 1000)
                if blank is not None:
                    result.flip_blank_samples_ms.append(blank * 1000)
            elif blank is not None:
                result.restore_samples_ms.append(blank * 1000)
            seen = waiter.seen.get(rv)
            if seen is not None:
                result.floor_samples_ms.append(max(0.0, seen - written_at) * 1000)
        except (ApiError, TransportError, ValueError) as err:
            unanswered(flip, f"{kind} of {key}: {err}")
        finally:
            observer.forget(key)
            busy.discard(index)

    start = time.monotonic()
    total = int(rate * s.latency_duration)
    async with anyio.create_task_group() as tg:
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            index = workload.pick_inference(n, busy, rng)
            if index is None:
                result.skipped += 1
                continue
            busy.add(index)
            flip = i % 2 == 0
            result.writes += 1
            if flip:
                result.flips += 1
            else:
                result.same_state += 1
            tg.start_soon(one_write, index, flip)
    elapsed = time.monotonic() - start
    after = proc.sample()
    if profiler is not None:
        profiler.stop()
    result.disappearances = observer.disappearances - disappeared_before
    result.conflicts = kaito.stats.conflicts
    result.retries = kaito.stats.retries
    result.foreign_cores = meter.cores()
    result.rate = result.writes / elapsed if elapsed > 0 else 0.0
    if result.samples_ms:
        result.p50_ms = percentile(result.samples_ms, 0.50)
        result.p90_ms = percentile(result.samples_ms, 0.90)
        result.p99_ms = percentile(result.samples_ms, 0.99)
    if result.floor_samples_ms:
        result.floor_p50_ms = percentile(result.floor_samples_ms, 0.50)
    if result.restore_samples_ms:
        result.restore_p50_ms = percentile(result.restore_samples_ms, 0.50)
        result.restore_p90_ms = percentile(result.restore_samples_ms, 0.90)
        result.restore_p99_ms = percentile(result.restore_samples_ms, 0.99)
        result.restore_max_ms = max(result.restore_samples_ms)
    if result.flip_blank_samples_ms:
        result.flip_blank_p50_ms = percentile(result.flip_blank_samples_ms, 0.50)
        result.flip_blank_p90_ms = percentile(result.flip_blank_samples_ms, 0.90)
        result.flip_blank_p99_ms = percentile(result.flip_blank_samples_ms, 0.99)
        result.flip_blank_max_ms = max(result.flip_blank_samples_ms)
    if result.restore_p99_ms is not None and result.p99_ms:
        result.restore_over_decide_p99 = result.restore_p99_ms / result.p99_ms
    made = result.writes - result.unchanged
    if before is not None and after is not None and made:
        result.cpu_per_1000 = (after.cpu_seconds - before.cpu_seconds) / made * 1000
    if made:
        # Read after the last write was answered; the recorder writes in the background,
        # so an Event still queued then is not counted.
        events = events_between(events_before, await event_counts(client))
        result.events_per_1000 = events / made * 1000
    # Every version without the field must be one of the harness's writes, each measured
    # or counted as unanswered; more means a contender dropped the field itself.
    accounted = (
        len(result.flip_blank_samples_ms)
        + len(result.restore_samples_ms)
        + result.timeouts
        + result.unrestored
    )
    extra = result.disappearances - accounted
    result.ok = (
        result.timeouts == 0
        and result.unrestored == 0
        and extra <= 0
        and bool(result.samples_ms)
        and bool(result.restore_samples_ms)
    )
    if not result.ok and not result.error:
        result.error = (
            f"{result.timeouts} of {result.flips} flips not answered, "
            f"{result.unrestored} of {result.same_state} same-state writes not restored"
            + (
                f", {extra} versions without status.status not written by KAITO"
                if extra > 0
                else ""
            )
        )
    return result
