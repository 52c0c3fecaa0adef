"""The kopf peer of the workspace-operator benchmark.

The same job as ours, decided and remembered by the same code: every watch event of a
Workspace goes through the project's pure ``next_state`` (which reads the previous
state from status.status, else from the record condition), and when status.status or
the record no longer holds the state (a transition, or KAITO's status PUT dropped the
field) the patch that ``controllers.workspace.record.state_patch`` builds is applied.

It is applied the kopf way: as a patch function (``patch.fns``). kopf applies the
function to the body of the event, diffs the result into JSON-patch ops, and sends the
status ops to the status subresource in one request, preceded by a ``test`` of the
body's resourceVersion: the same precondition as ours (a stale body is refused, 422
where ours gets 409). A refused patch stays with kopf until the next event of the
object, when it is applied to that newer body; the function then does nothing, because
a decision holds only for the version it was made on and the newer event's handler
decides again.

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

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jsonpatch  # kopf's dependency (the bench venv)
import kopf  # type: ignore[import-not-found]  # in the bench venv only

from controllers.workspace.fsm import Decision, Deleting, next_state
from controllers.workspace.model import WorkspaceParseError, parse_workspace
from controllers.workspace.record import state_patch

Obj = dict[str, Any]


def _apply_on(resource_version: str, ops: list[Obj]) -> Callable[[Obj], None]:
    """A kopf patch function that applies ``ops`` to the version they were built for,
    and leaves any other version alone."""

    def apply(body: Obj) -> None:
        if body.get("metadata", {}).get("resourceVersion") == resource_version:
            jsonpatch.apply_patch(body, ops, in_place=True)

    return apply


@kopf.on.event("kaito.sh", "v1beta1", "workspaces")  # type: ignore[untyped-decorator]
async def workspace_status(type: str | None, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    if type == "DELETED":
        return
    try:
        workspace = parse_workspace(dict(body))
    except WorkspaceParseError:
        return
    outcome = next_state(workspace)
    if isinstance(outcome, Decision) and outcome.needs_write:
        state = outcome.state.value
    elif isinstance(outcome, Deleting) and outcome.restore is not None:
        state = outcome.restore
    else:
        return
    ops = state_patch(workspace, state, datetime.now(UTC))
    patch.fns.append(_apply_on(body["metadata"]["resourceVersion"], ops))
