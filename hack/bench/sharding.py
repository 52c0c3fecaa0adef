"""What sharding costs each process: RSS and CPU of every operator process, for one
process, two label shards and two hash shards, over the same work.

    .venv/bin/python -m hack.bench.sharding [--n 2000] [--writes 1000] [--rate 50]

A measurement, minutes long; not part of ``hack/test``. It starts its own control plane
(``.cache/bench/sharding-plane``), creates N KAITO-shaped workspaces (``workload``: half
inference, half tuning, every first state) labelled ``shard=a`` or ``shard=b`` (each
half holds every kind), and for each setup:

1. resets every workspace to what KAITO alone leaves (no state, no record), waits for a
   quiet machine, starts the setup's processes;
2. **convergence**: until the harness's watch sees every workspace in the state the
   state machine says, then a few quiet seconds; CPU from the spawn, RSS, peak RSS;
3. **KAITO writes**: ``--writes`` condition changes as KAITO writes them
   (``KaitoWriter``: GET, PUT of the typed status) at ``--rate`` per second on random
   inference workspaces, each flipping Ready ↔ NotReady and answered before that
   workspace gets its next; the CPU each process spent meanwhile.

Each process's reconciles and PATCHes come from its own metrics; the processes that
shared the machine meanwhile ("other load") from /proc. Results: a Markdown table on
stdout and ``bench-results/sharding-<time>/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson

from controllers.workspace.reconciler import WORKSPACE
from e2e.harness import sum_samples
from e2e.kaito import KaitoWriter
from hack.bench import procstat, workload
from hack.bench.observer import StateObserver
from hack.bench.pool import bounded
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.oplog import served_ports
from reconciler.errors import AlreadyExists
from reconciler.resource import NAMESPACE

ROOT = Path(__file__).resolve().parents[2]
PLANE_DIR = ROOT / ".cache" / "bench" / "sharding-plane"
WORKERS = 8  # --max-concurrent-reconciles of every process, as the main benchmark
CONCURRENCY = 32  # the harness's own requests in flight when creating and resetting
SETTLE = 3.0  # quiet seconds after convergence before RSS is read
QUIET_CORES = 0.25  # start a setup when other processes use less than this
QUIET_TIMEOUT = 300.0
QUIET_WINDOW = 2.0
ANSWER_TIMEOUT = 30.0  # a KAITO write the operator has not answered by then is a failure

SETUPS: dict[str, list[list[str]]] = {
    "one process": [[]],
    "label shards": [
        ["--label-selector=shard=a", "--leader-election-id=workspace-status-shard-a"],
        ["--label-selector=shard=b", "--leader-election-id=workspace-status-shard-b"],
    ],
    "hash shards": [
        ["--total-shards=2", "--shard=0"],
        ["--total-shards=2", "--shard=1"],
    ],
}


def log(message: str) -> None:
    print(f"[sharding {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shard_label(index: int) -> str:
    """Half the workspaces each, and each half has all eight kinds (``index % 8``)."""
    return "a" if index % 16 < 8 else "b"


@dataclass
class ProcessCost:
    flags: list[str]
    reconciles_converge: float = 0.0
    reconciles_writes: float = 0.0
    patches: float = 0.0  # PATCH requests (status, Events) over both phases
    counted: float = 0.0  # the process's kaito_workspace_status_workspaces, summed
    cpu_converge_s: float | None = None  # spawn → converged and settled
    cpu_writes_s: float | None = None  # over the KAITO writes
    rss_mib: float | None = None  # after convergence and SETTLE quiet seconds
    peak_rss_mib: float | None = None
    rss_after_writes_mib: float | None = None


@dataclass
class SetupResult:
    setup: str
    n: int
    converged_s: float | None = None
    writes: int = 0
    unanswered: int = 0
    writes_s: float | None = None
    other_load_converge: float | None = None  # cores other processes kept busy
    other_load_writes: float | None = None
    plane_cpu_s: float | None = None  # kube-apiserver + etcd over both phases
    processes: list[ProcessCost] = field(default_factory=list)
    error: str = ""


@dataclass
class _Process:
    flags: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    def metrics(self) -> str:
        port = served_ports(self.log_path).get("/metrics")
        if port is None:
            raise RuntimeError(f"no metrics port logged in {self.log_path}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        return sum_samples(self.metrics(), name, labels)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start(kubeconfig: Path, flags: list[str], log_path: Path) -> _Process:
    cmd = [
        sys.executable,
        "-m",
        "controllers",
        f"--kubeconfig={kubeconfig}",
        "--metrics-bind-address=127.0.0.1:0",
        "--health-probe-bind-address=127.0.0.1:0",
        f"--max-concurrent-reconciles={WORKERS}",
        # The workspaces are as old as the run: no StuckPending warnings.
        "--pending-warning-after=1000h",
        "--log-format=json",
        *flags,
    ]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return _Process(flags, proc, log_path)


async def create(client: Client, n: int) -> None:
    kaito = KaitoWriter(client, field_manager=workload.KAITO_FIELD_MANAGER)
    for ns in workload.NAMESPACES:
        with contextlib.suppress(AlreadyExists):
            await client.create(NAMESPACE, {"metadata": {"name": ns}})

    async def one(i: int) -> None:
        obj = workload.manifest(i)
        obj["metadata"].setdefault("labels", {})["shard"] = shard_label(i)
        key = workload.key_of(i)
        with contextlib.suppress(AlreadyExists):
            await client.create(WORKSPACE, obj)
        await kaito.replace_conditions(
            key.namespace, key.name, *workload.kaito_initial_conditions(i)
        )

    began = time.monotonic()
    await bounded(n, one, CONCURRENCY)
    log(f"created {n} workspaces in {time.monotonic() - began:.0f}s")


async def reset(client: Client, n: int) -> None:
    """Every workspace as KAITO alone leaves it: no state, no record, its initial
    conditions written by KAITO (the main benchmark's reset)."""
    kaito = KaitoWriter(client, field_manager=workload.KAITO_FIELD_MANAGER)

    async def one(i: int) -> None:
        key = workload.key_of(i)
        await client.patch_status(
            WORKSPACE,
            key.name,
            workload.FORGET_STATUS,
            namespace=key.namespace,
            field_manager=workload.HARNESS_FIELD_MANAGER,
        )
        await kaito.replace_conditions(
            key.namespace, key.name, *workload.kaito_initial_conditions(i)
        )

    began = time.monotonic()
    await bounded(n, one, CONCURRENCY)
    log(f"reset {n} workspaces in {time.monotonic() - began:.0f}s")


async def wait_quiet(own: list[int]) -> None:
    """Until processes other than ``own`` leave the cores alone, or QUIET_TIMEOUT."""
    began = time.monotonic()
    told = False
    while True:
        meter = procstat.ForeignLoad(own)
        await anyio.sleep(QUIET_WINDOW)
        cores = meter.cores()
        if cores < QUIET_CORES:
            return
        if time.monotonic() - began > QUIET_TIMEOUT:
            log(f"machine still busy ({cores:.2f} cores); measuring anyway")
            return
        if not told:
            log(f"other processes use {cores:.2f} cores; waiting up to {QUIET_TIMEOUT:.0f}s")
            told = True


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


async def kaito_writes(
    client: Client, observer: StateObserver, n: int, writes: int, rate: float, seed: int
) -> tuple[int, int]:
    """``writes`` flips of random inference workspaces at ``rate``/s; (answered, unanswered)."""
    kaito = KaitoWriter(client, field_manager=workload.KAITO_FIELD_MANAGER, deadline=ANSWER_TIMEOUT)
    rng = random.Random(seed)
    busy: set[int] = set()
    answered = unanswered = 0

    async def one(index: int) -> None:
        nonlocal answered, unanswered
        key = workload.key_of(index)
        try:
            conditions, expected = workload.flip(index, observer.states.get(key))
            waiter = observer.wait_for(key, expected)
            await kaito.replace_conditions(key.namespace, key.name, *conditions)
            with anyio.move_on_after(ANSWER_TIMEOUT):
                await waiter.done.wait()
            if waiter.done_at is None:
                unanswered += 1
            else:
                answered += 1
        finally:
            observer.forget(key)
            busy.discard(index)

    async with anyio.create_task_group() as tg:
        began = time.monotonic()
        for k in range(writes):
            await anyio.sleep(max(0.0, began + k / rate - time.monotonic()))
            index = workload.pick_inference(n, busy, rng)
            if index is None:
                unanswered += 1
                continue
            busy.add(index)
            tg.start_soon(one, index)
    return answered, unanswered


async def measure(
    plane: ControlPlane,
    client: Client,
    setup: str,
    n: int,
    o: argparse.Namespace,
    out: Path,
) -> SetupResult:
    result = SetupResult(setup, n)
    expected = workload.initial_expectations(n)
    plane_pids = [plane.state.apiserver_pid, plane.state.etcd_pid]
    observer = StateObserver(client)
    async with anyio.create_task_group() as tg:
        await tg.start(observer.run)
        await reset(client, n)
        own = [os.getpid(), *plane_pids]
        await wait_quiet(own)
        observer.expect(expected)
        plane_cpu0 = sum(procstat.cpu_seconds(p) for p in plane_pids)
        meter = procstat.ForeignLoad(own)
        tag = setup.replace(" ", "-")
        procs = [
            _start(plane.kubeconfig, flags, out / f"{tag}-{i}.log")
            for i, flags in enumerate(SETUPS[setup])
        ]
        spawned = time.monotonic()
        for p in procs:
            meter.add(p.proc.pid)
        costs = [ProcessCost(p.flags) for p in procs]
        result.processes = costs
        try:
            with anyio.move_on_after(60 + 0.05 * n):
                await observer.converged.wait()
            if not observer.converged.is_set():
                result.error = f"did not converge: {observer.matched}/{n}; {observer.wrong()}"
                return result
            result.converged_s = round(time.monotonic() - spawned, 2)
            await anyio.sleep(SETTLE)
            result.other_load_converge = round(meter.cores(), 2)
            for p, c in zip(procs, costs, strict=True):
                s = procstat.sample(p.proc.pid)
                c.cpu_converge_s = round(s.cpu_seconds, 2)
                c.rss_mib, c.peak_rss_mib = _mib(s.rss_bytes), _mib(s.hwm_bytes)
                c.reconciles_converge = p.metric(
                    "controller_runtime_reconcile_total", controller="workspace-status"
                )
                c.counted = p.metric("kaito_workspace_status_workspaces")
            log(f"{setup}: converged in {result.converged_s}s")

            await wait_quiet([*own, *(p.proc.pid for p in procs)])
            meter = procstat.ForeignLoad([*own, *(p.proc.pid for p in procs)])
            before = [procstat.sample(p.proc.pid).cpu_seconds for p in procs]
            began = time.monotonic()
            answered, result.unanswered = await kaito_writes(
                client, observer, n, o.writes, o.rate, o.seed
            )
            await anyio.sleep(SETTLE)
            result.writes = answered + result.unanswered
            result.writes_s = round(time.monotonic() - began - SETTLE, 1)
            result.other_load_writes = round(meter.cores(), 2)
            for p, c, cpu0 in zip(procs, costs, before, strict=True):
                s = procstat.sample(p.proc.pid)
                c.cpu_writes_s = round(s.cpu_seconds - cpu0, 2)
                c.rss_after_writes_mib = _mib(s.rss_bytes)
                c.reconciles_writes = (
                    p.metric("controller_runtime_reconcile_total", controller="workspace-status")
                    - c.reconciles_converge
                )
                c.patches = p.metric("rest_client_requests_total", method="PATCH")
            result.plane_cpu_s = round(
                sum(procstat.cpu_seconds(p) for p in plane_pids) - plane_cpu0, 1
            )
            log(f"{setup}: {answered} KAITO writes answered, {result.unanswered} not")
        finally:
            for p in procs:
                p.stop()
            tg.cancel_scope.cancel()
    return result


def markdown(results: list[SetupResult], meta: dict[str, Any]) -> str:
    lines = [
        f"N = {meta['n']:,} workspaces, {meta['writes']:,} KAITO writes at "
        f"{meta['rate']:g}/s, {WORKERS} workers a process; {meta['machine']}",
        "",
        "| setup | process | RSS after convergence (MiB) | peak RSS (MiB) | CPU s "
        "spawn → converged | reconciles | CPU s over the KAITO writes | reconciles | "
        "PATCH requests | gauge counts | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.setup} | FAILED: {r.error} |")
            continue
        load = f"{r.other_load_converge} / {r.other_load_writes}"
        for c in r.processes:
            who = " ".join(c.flags) or "(all)"
            lines.append(
                f"| {r.setup} | `{who}` | {c.rss_mib} | {c.peak_rss_mib} | "
                f"{c.cpu_converge_s} | {c.reconciles_converge:.0f} | {c.cpu_writes_s} | "
                f"{c.reconciles_writes:.0f} | {c.patches:.0f} | {c.counted:.0f} | {load} |"
            )
        if len(r.processes) > 1:
            total_rss = sum(c.rss_mib or 0 for c in r.processes)
            cpu_c = sum(c.cpu_converge_s or 0 for c in r.processes)
            cpu_w = sum(c.cpu_writes_s or 0 for c in r.processes)
            lines.append(
                f"| {r.setup} | **both** | {total_rss:.1f} | | {cpu_c:.2f} | | {cpu_w:.2f} | "
                "| | | |"
            )
    lines.append("")
    lines.extend(
        f"- {r.setup}: converged in {r.converged_s} s; {r.writes} KAITO writes in "
        f"{r.writes_s} s ({r.unanswered} unanswered); kube-apiserver + etcd "
        f"{r.plane_cpu_s} CPU s over both phases"
        for r in results
        if not r.error
    )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


async def bench(plane: ControlPlane, o: argparse.Namespace, out: Path) -> list[SetupResult]:
    client = await Client.from_config(str(plane.kubeconfig), user_agent="bench-sharding")
    async with client:
        await create(client, o.n)
        results = []
        for setup in o.setups:
            results.append(await measure(plane, client, setup, o.n, o, out))
            (out / "results.partial.json").write_bytes(orjson.dumps([asdict(r) for r in results]))
        return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hack.bench.sharding", description=__doc__)
    p.add_argument("--n", type=int, default=2000, help="workspaces")
    p.add_argument("--writes", type=int, default=1000, help="KAITO condition writes")
    p.add_argument("--rate", type=float, default=50.0, help="KAITO writes per second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--setups",
        type=lambda t: [s.strip() for s in t.split(",")],
        default=list(SETUPS),
        help=f"comma-separated, of: {', '.join(SETUPS)}",
    )
    o = p.parse_args(argv)
    unknown = [s for s in o.setups if s not in SETUPS]
    if unknown:
        p.error(f"unknown setups {unknown}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench-results" / f"sharding-{stamp}"
    out.mkdir(parents=True)
    bin_dir = Path(os.environ.get("RECONCILER_ASSETS", ROOT / ".cache/control-plane/bin"))
    plane = ControlPlane(bin_dir, PLANE_DIR, crd_paths=[ROOT / "config" / "crd"])
    plane.stop()
    plane.start()
    try:
        results = anyio.run(bench, plane, o, out)
    finally:
        plane.stop()
    meta = {
        "n": o.n,
        "writes": o.writes,
        "rate": o.rate,
        "machine": _machine(),
        "started": stamp,
    }
    document = {"meta": meta, "results": [asdict(r) for r in results]}
    (out / "results.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    text = markdown(results, meta)
    (out / "results.md").write_text(text)
    print(text)
    return 1 if any(r.error or r.unanswered for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
