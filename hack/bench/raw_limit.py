"""The raw limit: the same status patches as the controllers send, and nothing else.

No list, no watch, no cache, no state machine: the harness hands over what to write
(namespace, name and the JSON patch per workspace: the one ours sends for a first state,
which sets status.status and the record condition after a precondition on the
resourceVersion the harness saw) and this script sends each on the status subresource,
over ``--workers`` keep-alive connections. What the API server does with that on this
machine is the ceiling any controller can reach. It only converges: with no watch, it
has nothing to answer KAITO's later writes with.

Exits 1 if any patch fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import resource
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml


def ssl_context(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    config = yaml.safe_load(kubeconfig.read_text())
    current = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(cert, key)
    return cluster["server"].rstrip("/"), ctx


async def patch_all(
    server: str, ctx: ssl.SSLContext, jobs: list[dict[str, Any]], workers: int
) -> int:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    failures = 0
    headers = {"Content-Type": "application/json-patch+json", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(ssl=ctx, limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                job = queue.get_nowait()
                url = (
                    f"{server}/apis/kaito.sh/v1beta1/namespaces/{job['namespace']}"
                    f"/workspaces/{job['name']}/status"
                )
                body = orjson.dumps(job["patch"])
                async with session.patch(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures += 1
                        print(f"{job['namespace']}/{job['name']}: HTTP {resp.status}", flush=True)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--job", type=Path, required=True, help="JSON list of patches to send")
    a = p.parse_args()
    server, ctx = ssl_context(a.kubeconfig)
    jobs = orjson.loads(a.job.read_bytes())
    failures = asyncio.run(patch_all(server, ctx, jobs, a.workers))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"sent {len(jobs)} patches, {failures} failed", flush=True)
    report = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "patches": len(jobs)}
    print(f"RESULT {orjson.dumps(report).decode()}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
