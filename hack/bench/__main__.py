"""The workspace status controller benchmark; `hack/bench/run --help` says how to run it.

One run of the harness starts its own local control plane (etcd + kube-apiserver with
the Workspace CRD), creates the workspaces once per N and reuses them, and for each run
and each controller: resets every workspace (KAITO's initial conditions, no
status.status, no record), starts the controller, times convergence (which also gives
startup, CPU and memory), then, for the controllers that watch, writes conditions as
KAITO does at each rate of ``--latency-rates`` in turn for the latency phase (half of
the writes change the state, half keep it), and stops the controller. Results go to
bench-results/<time>/.

Every write of conditions is KAITO's (``e2e.kaito.KaitoWriter``: GET, PUT of the typed
status, which drops status.status); the harness writes only the reset's
``workload.FORGET_STATUS``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson

from controllers.workspace.reconciler import WORKSPACE
from e2e.kaito import KaitoWriter
from hack.bench import contenders, report, workload
from hack.bench.contenders import ALL, BASELINE, DEFAULT, OURS, WATCHING
from hack.bench.observer import StateObserver
from hack.bench.pool import bounded
from hack.bench.scenarios import (
    Convergence,
    Latency,
    Settings,
    as_dict,
    converge,
    log,
    measure_latency,
)
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.errors import AlreadyExists
from reconciler.resource import NAMESPACE, Obj, ResourceType

ROOT = contenders.ROOT
SCENARIOS = ("convergence", "latency", "memory", "startup", "cpu")
CREATE_CONCURRENCY = 32
QUIET_BEFORE_START = 2.0  # seconds between a reset and the next controller


@dataclass
class Options:
    ns: list[int]
    runs: int
    scenarios: list[str]
    controllers: list[str]
    workers: int
    latency_n: int
    settings: Settings
    keep_plane: bool
    seed: int
    retries: int
    report_from: Path | None


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.split(r"[,\s]+", text.strip()) if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in re.split(r"[,\s]+", text.strip()) if x]


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = [x for x in names if x not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {unknown}; choose from {list(allowed)}")
        return names

    return parse


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="hack/bench/run",
        description="Benchmark ours against the raw API-server limit, controller-runtime "
        "and kopf on one local API server.",
    )
    p.add_argument("--n", type=_ints, default=[1000], help="workspaces, e.g. 1000,10000")
    p.add_argument("--runs", type=int, default=3, help="runs per N (medians are reported)")
    p.add_argument(
        "--scenarios",
        type=_names(SCENARIOS),
        default=list(SCENARIOS),
        help="comma-separated subset of " + ",".join(SCENARIOS) + " (convergence always "
        "runs: the others are measured on it; leaving out latency skips the flip phase)",
    )
    p.add_argument("--controllers", type=_names(ALL), default=list(DEFAULT), help=",".join(DEFAULT))
    p.add_argument("--workers", type=int, default=8, help="concurrency of every contender")
    p.add_argument("--latency-n", type=int, default=1000, help="N of the latency phase")
    p.add_argument(
        "--latency-rates",
        type=_floats,
        default=[50.0, 200.0],
        help="KAITO status writes per s in the latency phase, one phase per rate, e.g. "
        "50,200: alternately a flip of the state and a write that keeps it",
    )
    p.add_argument("--latency-duration", type=float, default=60.0, help="seconds per rate")
    p.add_argument("--settle", type=float, default=3.0, help="quiet seconds before RSS")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy ours during convergence and each latency phase (profiles/)",
    )
    p.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="start a measurement only when other processes use fewer cores than this",
    )
    p.add_argument("--quiet-timeout", type=float, default=900.0, help="then measure anyway")
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure again when other processes used over twice --quiet-cores meanwhile",
    )
    p.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        help="an extra flag for ours, e.g. --ours-arg=--log-level=warning (repeatable)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout of this repository: its operator runs as the contender "
        "'baseline' right beside ours in every run (the order alternating between runs), "
        "for a paired before/after comparison",
    )
    p.add_argument("--keep-plane", action="store_true", help="leave the control plane up")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: bench-results/<time>")
    p.add_argument(
        "--report-from",
        type=Path,
        default=None,
        help="measure nothing: write the tables from a results.partial.json "
        "(give the same --n/--runs/... as that run)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="N=20, 1 run, 5 s of latency at 10 writes/s, all controllers; fails on any failure",
    )
    a = p.parse_args(argv)
    if a.smoke:
        a.n, a.runs, a.controllers, a.scenarios = [20], 1, list(DEFAULT), list(SCENARIOS)
        a.latency_n, a.latency_rates, a.latency_duration, a.settle = 20, [10.0], 5.0, 1.0
        a.quiet_timeout = min(a.quiet_timeout, 30.0)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if a.smoke else "")
    out = (a.out or ROOT / "bench-results" / stamp).resolve()
    ns = sorted(set(a.n))
    latency_n = a.latency_n if a.latency_n in ns else ns[0]
    return Options(
        ns=ns,
        runs=a.runs,
        scenarios=a.scenarios,
        controllers=[
            c for c in ALL if c in a.controllers or (c == BASELINE and a.baseline is not None)
        ],
        workers=a.workers,
        latency_n=latency_n,
        settings=Settings(
            workers=a.workers,
            settle=a.settle,
            latency_rates=tuple(sorted(set(a.latency_rates))),
            latency_duration=a.latency_duration,
            flip_timeout=30.0,
            profile=a.profile,
            out=out,
            quiet_cores=a.quiet_cores,
            quiet_timeout=a.quiet_timeout,
            ours_args=tuple(a.ours_arg),
            baseline=a.baseline.resolve() if a.baseline is not None else None,
        ),
        keep_plane=a.keep_plane,
        seed=a.seed,
        retries=a.retries,
        report_from=a.report_from,
    )


class _AlreadyRead:
    """What ``KaitoWriter`` reads and writes through, where the harness's own request has
    just returned the object: KAITO's first GET of it is answered with that answer.
    KAITO's controller reads from its informer cache, which holds exactly that version
    once the watch delivers it, so the write is the one KAITO makes; the harness saves a
    request per workspace (a third of creating or resetting 100,000). Any later GET (a
    409 retry) goes to the API server. A real cache can still lag behind the watch and
    earn KAITO a 409; this never does, so creation and reset meet fewer conflicts than a
    busy cluster would (the measured phases use ``KaitoWriter`` on the API server)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._answers: dict[tuple[str | None, str], Obj] = {}

    def hand(self, obj: Obj) -> None:
        meta = obj["metadata"]
        self._answers[(meta.get("namespace"), meta["name"])] = obj

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        answer = self._answers.pop((namespace, name), None)
        return answer if answer is not None else await self._client.get(rt, name, namespace)

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        return await self._client.replace(
            rt, obj, subresource=subresource, field_manager=field_manager
        )


async def create_workspaces(client: Client, start: int, stop: int) -> int:
    """Create workspaces ``start``..``stop - 1``; KAITO then writes their conditions.
    Returns how many existed already (a control plane kept from an earlier run)."""
    read = _AlreadyRead(client)
    kaito = KaitoWriter(read, field_manager=workload.KAITO_FIELD_MANAGER)
    existed = 0

    async def create(i: int) -> None:
        nonlocal existed
        key = workload.key_of(start + i)
        try:
            read.hand(await client.create(WORKSPACE, workload.manifest(start + i)))
        except AlreadyExists:
            existed += 1
        await kaito.replace_conditions(
            key.namespace, key.name, *workload.kaito_initial_conditions(start + i)
        )

    began = time.monotonic()
    await bounded(stop - start, create, CREATE_CONCURRENCY)
    log(f"created workspaces {start}..{stop - 1} in {time.monotonic() - began:.1f}s")
    return existed


async def reset_workspaces(client: Client, n: int) -> None:
    """Give every workspace the status of a fresh one, then KAITO's initial conditions:
    every contender starts from what KAITO alone leaves, with nothing remembered.

    Two requests a workspace: the harness's patch, and KAITO's PUT computed from the
    version that patch returned (``_AlreadyRead``), where one merge patch of
    KAITO-shaped conditions would do. Kept, because the reset is then KAITO's own write
    and not an imitation of its result."""
    read = _AlreadyRead(client)
    kaito = KaitoWriter(read, field_manager=workload.KAITO_FIELD_MANAGER)

    async def reset(i: int) -> None:
        key = workload.key_of(i)
        forgotten = await client.patch_status(
            WORKSPACE,
            key.name,
            workload.FORGET_STATUS,
            namespace=key.namespace,
            field_manager=workload.HARNESS_FIELD_MANAGER,
        )
        read.hand(forgotten)
        await kaito.replace_conditions(
            key.namespace, key.name, *workload.kaito_initial_conditions(i)
        )

    began = time.monotonic()
    await bounded(n, reset, CREATE_CONCURRENCY)
    log(f"reset {n} workspaces in {time.monotonic() - began:.1f}s")


def tidy_etcd(plane: ControlPlane) -> None:
    """Compact etcd to its current revision and defragment it, between measurements.

    What a production cluster does in the background: kube-apiserver compacts every
    5 min, and managed control planes defragment on a schedule. Here each reset of
    100,000 workspaces writes two versions of each (~2 GiB with their managedFields and
    last-applied annotation); without this the database would grow towards its quota
    over a long run, and an automatic defragmentation could land inside a measurement.
    Every contender starts on the same compact database."""
    began = time.monotonic()
    plane.compact_etcd()
    before = plane.etcd_db_size()
    plane.defragment_etcd()
    log(
        f"etcd compacted and defragmented in {time.monotonic() - began:.1f}s: "
        f"{before / 2**20:.0f} → {plane.etcd_db_size() / 2**20:.0f} MiB"
    )


@dataclass
class _Context:
    client: Client
    plane: ControlPlane
    kubeconfig: Path
    plane_pids: list[int]
    o: Options
    rng: random.Random
    results: dict[str, list[dict[str, Any]]]


async def bench(plane: ControlPlane, o: Options, results: dict[str, list[dict[str, Any]]]) -> None:
    client = await Client.from_config(str(plane.kubeconfig), user_agent="bench-harness")
    async with client:
        ctx = _Context(
            client,
            plane,
            plane.kubeconfig,
            [plane.state.apiserver_pid, plane.state.etcd_pid],
            o,
            random.Random(o.seed),
            results,
        )
        for ns in workload.NAMESPACES:
            with contextlib.suppress(AlreadyExists):
                await client.create(NAMESPACE, {"metadata": {"name": ns}})
        created = 0
        for n in o.ns:
            existed = await create_workspaces(client, created, n)
            # Only creations and KAITO's first writes so far: what a reset leaves.
            fresh = created == 0 and existed == 0
            created = n
            tidy_etcd(plane)
            expected = workload.initial_expectations(n)
            for run in range(1, o.runs + 1):
                for name in _order(o.controllers, run):
                    await _measure(ctx, name, run, expected, fresh=fresh)
                    fresh = False


def _order(controllers: list[str], run: int) -> list[str]:
    """The contenders of one run; ours and the baseline swap places every other run,
    so that neither always runs on the machine the other has just warmed up."""
    order = list(controllers)
    if run % 2 == 0 and OURS in order and BASELINE in order:
        i, j = order.index(OURS), order.index(BASELINE)
        order[i], order[j] = order[j], order[i]
    return order


async def _measure(
    ctx: _Context, name: str, run: int, expected: dict[workload.Key, str], *, fresh: bool
) -> None:
    """One controller, one run; measured again (up to --retries times) when other
    processes disturbed it. ``fresh``: no controller has touched the workspaces since
    they were created, so the first attempt needs no reset (at N=100,000 a reset is
    200,000 requests, about 13 minutes)."""
    o = ctx.o
    limit = 2 * o.settings.quiet_cores
    for attempt in range(o.retries + 1):
        if attempt > 0 or not fresh:
            await reset_workspaces(ctx.client, len(expected))
            tidy_etcd(ctx.plane)
        await anyio.sleep(QUIET_BEFORE_START)
        conv, lats = await _attempt(ctx, name, run, expected)
        results: list[Convergence | Latency] = [conv, *lats]
        loads = [r.foreign_cores or 0.0 for r in results if r.ok]
        disturbed = max(loads, default=0.0)
        if disturbed <= limit or attempt == o.retries:
            ctx.results["convergence"].append(as_dict(conv))
            ctx.results["latency"] += [as_dict(lat) for lat in lats]
            # What is measured so far survives an interrupted run.
            partial = o.settings.out / "results.partial.json"
            partial.write_bytes(orjson.dumps(ctx.results))
            return
        log(f"{name}: other processes used {disturbed:.2f} cores; measuring again")


async def _attempt(
    ctx: _Context, name: str, run: int, expected: dict[workload.Key, str]
) -> tuple[Convergence, list[Latency]]:
    s = ctx.o.settings
    n = len(expected)
    observer = StateObserver(ctx.client)
    lats: list[Latency] = []
    async with anyio.create_task_group() as tg:
        await tg.start(observer.run)
        conv, proc = await converge(
            name, run, ctx.client, observer, expected, ctx.plane_pids, ctx.kubeconfig, s
        )
        if conv.ok:
            log(
                f"N={n} run {run} {name}: converged in {conv.converged_s:.2f}s "
                f"({conv.objects_per_s:.0f}/s), first write {conv.startup_s:.2f}s, "
                f"CPU {_fmt(conv.cpu_per_1000)} s/1000, RSS {_mib(conv.rss_bytes)} MiB "
                f"(peak {_mib(conv.hwm_bytes)}), raw list {_fmt(conv.raw_list_s)}s, "
                f"other load {_fmt(conv.foreign_cores)} cores"
            )
        else:
            log(f"N={n} run {run} {name}: FAILED: {conv.error}")
        try:
            latency = "latency" in ctx.o.scenarios and n == ctx.o.latency_n and name in WATCHING
            for rate in s.latency_rates if latency else ():
                if proc is None or not proc.alive():
                    break
                lat = await measure_latency(
                    ctx.client, proc, run, n, rate, observer, ctx.plane_pids, s, ctx.rng
                )
                lats.append(lat)
                log(
                    f"N={n} run {run} {name} at {rate:g}/s: condition → state p50 "
                    f"{_fmt(lat.p50_ms)} "
                    f"p90 {_fmt(lat.p90_ms)} p99 {_fmt(lat.p99_ms)} ms over {lat.flips} "
                    f"flips ({lat.timeouts} unanswered); restore p50 "
                    f"{_fmt(lat.restore_p50_ms)} p99 {_fmt(lat.restore_p99_ms)} max "
                    f"{_fmt(lat.restore_max_ms)} ms over {lat.same_state} same-state writes "
                    f"({lat.unrestored} not restored); other load "
                    f"{_fmt(lat.foreign_cores)} cores" + (f": {lat.error}" if lat.error else "")
                )
        finally:
            if proc is not None:
                code = proc.stop()
                if code not in (0, -15, 143):
                    log(f"{name} exited with {code} on SIGTERM")
        tg.cancel_scope.cancel()
    return conv, lats


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 1048576:.1f}"


def _versions() -> str:
    parts = []
    stamp = contenders.ROOT / ".cache" / "control-plane" / "bin" / ".versions"
    assets = Path(os.environ.get("RECONCILER_ASSETS", stamp.parent)) / ".versions"
    if assets.exists():
        parts.append(assets.read_text().strip().replace("kubernetes=", "kube-apiserver "))
    gomod = (ROOT / "hack" / "bench" / "peers" / "controller-runtime" / "go.mod").read_text()
    for module in ("sigs.k8s.io/controller-runtime", "k8s.io/client-go"):
        m = re.search(rf"^\s*{re.escape(module)} (\S+)", gomod, re.MULTILINE)
        if m:
            parts.append(f"{module.split('/')[-1]} {m.group(1)}")
    reqs = (ROOT / "hack" / "bench" / "requirements.txt").read_text()
    m = re.search(r"^kopf==(\S+)", reqs, re.MULTILINE)
    if m:
        parts.append(f"kopf {m.group(1)}")
    parts.append(f"Python {platform.python_version()}")
    try:
        go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
        parts.append(go.stdout.split()[2])
    except (OSError, IndexError):
        pass
    return ", ".join(parts)


def _machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, {system}"


def main(argv: list[str]) -> int:
    o = parse_args(argv)
    missing = contenders.missing()
    if missing:
        log(f"missing {missing}: run the benchmark with hack/bench/run, which builds them")
        return 2
    out = o.settings.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    latest = out.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
    bin_dir = Path(os.environ.get("RECONCILER_ASSETS", ROOT / ".cache/control-plane/bin"))
    plane = ControlPlane(
        bin_dir, contenders.BENCH_CACHE / "plane", crd_paths=[ROOT / "config" / "crd"]
    )
    meta = {
        "machine": _machine(),
        "versions": _versions(),
        "workers": o.workers,
        "runs": o.runs,
        "ns": o.ns,
        "controllers": o.controllers,
        "scenarios": o.scenarios,
        "settle": o.settings.settle,
        "quiet_cores": o.settings.quiet_cores,
        "quiet_timeout": o.settings.quiet_timeout,
        "latency_n": o.latency_n,
        "latency": f"N={o.latency_n:,}, "
        + " and ".join(f"{r:g}" for r in o.settings.latency_rates)
        + f" KAITO writes/s (half flips, half same-state), {o.settings.latency_duration:g} s "
        "each",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": argv,
        "ours_args": list(o.settings.ours_args),
        "baseline": str(o.settings.baseline) if o.settings.baseline else None,
    }
    results: dict[str, list[dict[str, Any]]] = {"convergence": [], "latency": []}
    began = time.monotonic()
    if o.report_from is not None:
        # Tables from the measurements of an earlier (perhaps interrupted) run.
        results.update(orjson.loads(o.report_from.read_bytes()))
    else:
        log(f"control plane starting; results in {out}")
        plane.stop()
        plane.start()
        try:
            anyio.run(bench, plane, o, results)
        finally:
            if not o.keep_plane:
                plane.stop()
    meta["seconds"] = round(time.monotonic() - began, 1)
    summary = report.summarize(results["convergence"], results["latency"])
    document = {"meta": meta, "summary": summary, **results}
    (out / "results.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    text = report.markdown(summary, meta)
    (out / "results.md").write_text(text)
    _plot(out / "results.json")
    print(text)
    failures = [r for rows in results.values() for r in rows if not r["ok"]]
    expected_runs = len(o.ns) * o.runs * len(o.controllers)
    if failures or len(results["convergence"]) != expected_runs:
        for r in failures:
            log(f"FAILED {r['controller']} N={r['n']} run {r['run']}: {r['error']}")
        log(f"{len(failures)} failure(s); see {out}/logs")
        return 1
    log(f"done in {meta['seconds']}s; {out}/results.md")
    return 0


def _plot(results_json: Path) -> None:
    python = contenders.BENCH_VENV / "bin" / "python"
    proc = subprocess.run(
        [str(python), str(ROOT / "hack" / "bench" / "plot.py"), str(results_json)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        log(f"plot failed: {proc.stderr.strip()[-2000:]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
