"""The kopf peer of the workspace-operator benchmark.

The same job as ours, decided by the same code: every watch event of a Workspace goes
through the project's pure ``next_state``, and a changed state is written to
status.status. kopf applies the handler's ``patch`` as a merge patch on the status
subresource (the CRD has one), as a kopf user would write it; kopf has no way to put
the read resourceVersion into that request, so its writes are not optimistic.

``@kopf.on.event`` rather than create/update handlers: those keep kopf's bookkeeping in
an annotation on every object, an extra write per change that no other contender does.

kopf's settings are its defaults. Its concurrency is not a worker pool: each object
with events gets its own worker task, which lingers ``settings.queueing.idle_timeout``
(5 s) for more events of that object. Capping ``worker_limit`` at the other contenders'
worker count would therefore stall every object past the first few for 5 s, which says
nothing about kopf; unbounded (the default) is how kopf is meant to run.

Run: ``kopf run --standalone --all-namespaces hack/bench/peers/kopf_peer.py`` with the
project root on PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers.workspace.fsm import Decision, next_state
from controllers.workspace.model import WorkspaceParseError, parse_workspace


@kopf.on.event("kaito.sh", "v1beta1", "workspaces")
async def workspace_status(type: str | None, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if type == "DELETED":
        return
    try:
        workspace = parse_workspace(dict(body))
    except WorkspaceParseError:
        return
    decision = next_state(workspace)
    if isinstance(decision, Decision) and decision.changed:
        patch.status["status"] = decision.state.value
