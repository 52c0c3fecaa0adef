"""KAITO's validating admission webhook beside our operator, on the shared control plane.

The webhook is the double in ``e2e/kaito_webhook.py`` (knative's admission code over
the JSON shape of KAITO v0.12.0's Workspace types; hack/kaito-webhook). It decodes the
new and the old object strictly, so ``status.status``, a field KAITO's type lacks,
decides which writes it lets through. KAITO's own validation rules are not reproduced,
and no test here relies on them. The first tests establish those facts on their own, with
the API server's exact answers; the last runs the operator with the webhook registered
and checks what a user needs: KAITO is never refused because of us, the state is still
recorded, and one warning says why ``status.status`` stays empty.

The control plane installs this repository's CRD (config/crd), which has
``status.status``: with KAITO's own CRD the API server would prune the field before
admission, and the webhook would never see it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from e2e.conftest import OperatorFactory
from e2e.harness import (
    CRASHING,
    INFERENCE_EXAMPLE,
    INFERENCE_READY,
    RECORD,
    TUNING_EXAMPLE,
    WORKSPACE,
    TransitionAuditor,
    condition,
    create_workspace,
    events_for,
    eventually,
)
from e2e.kaito import RETRY_DURATION, RETRY_STEPS, KaitoWriter
from e2e.kaito_webhook import WEBHOOK_NAME, KaitoWebhook, build, registered
from reconciler.client import Client, PatchType
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.settings import assets_dir
from reconciler.errors import ApiError, Conflict

Obj = dict[str, Any]
V1ALPHA1_EXAMPLE = "v1alpha1_azure_kaito_workspace_falcon_7b.yaml"
KAITO_FINALIZER = "workspace.finalizer.kaito.sh"  # pkg/utils/consts/consts.go @ v0.12.0
DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request: '
# knative's wording (validation_admit.go, webhook/json/decode.go) around encoding/json's.
NEW_HAS_STATUS = DENIED + (
    'decoding request failed: cannot decode incoming new object: json: unknown field "status"'
)
OLD_HAS_STATUS = DENIED + (
    'decoding request failed: cannot decode incoming old object: json: unknown field "status"'
)


@pytest.fixture(scope="module")
def kaito_webhook(
    control_plane: ControlPlane | None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KaitoWebhook]:
    """The webhook process (built into the control plane's assets folder when missing),
    not yet registered: tests register it with ``registered`` when they need it."""
    if control_plane is None:
        pytest.skip("the webhook listens on 127.0.0.1, which only the local API server reaches")
    hook = KaitoWebhook(build(assets_dir()), kubeconfig, tmp_path_factory.mktemp("kaito-webhook"))
    hook.start()
    yield hook
    code = hook.stop()
    assert code == 0, f"kaito-webhook exited {code}:\n{hook.log()[-4000:]}"


def record(state: str) -> Obj:
    """The operator's record condition holding ``state``, as it writes it."""
    return condition(RECORD, "True", state, f"status.status is {state} since this time")


async def kaito_annotation_update(k8s: Client, ns: str, name: str, value: str) -> Obj:
    """KAITO's write of the main resource on each reconcile: an annotation set on the
    object as read and PUT back, again on a conflict (pkg/utils/workspace/workspace.go
    @ v0.12.0, retry.DefaultRetry's five attempts)."""
    for attempt in range(RETRY_STEPS):
        obj = copy.deepcopy(await k8s.get(WORKSPACE, name, ns))
        obj["metadata"].setdefault("annotations", {})["kaito.sh/test-reconciled"] = value
        try:
            return await k8s.replace(WORKSPACE, obj)
        except Conflict:
            if attempt == RETRY_STEPS - 1:
                raise
            await anyio.sleep(RETRY_DURATION)
    raise AssertionError("unreachable")


async def merge_annotation(k8s: Client, ns: str, name: str, value: str) -> Obj:
    return await k8s.patch(
        WORKSPACE,
        name,
        {"metadata": {"annotations": {"kaito.sh/test-reconciled": value}}},
        namespace=ns,
    )


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


# -- (a) what KAITO itself does passes ---------------------------------------------------
async def test_kaito_examples_and_kaito_writes_are_allowed(
    k8s: Client, namespace: str, kaito_webhook: KaitoWebhook
) -> None:
    ns = namespace
    async with registered(k8s, kaito_webhook):
        # KAITO's examples decode into its types, in both versions and both workloads.
        await create_workspace(k8s, ns, "inference", INFERENCE_EXAMPLE)
        await create_workspace(k8s, ns, "tuning", TUNING_EXAMPLE)
        await create_workspace(k8s, ns, "alpha", V1ALPHA1_EXAMPLE)
        writer = KaitoWriter(k8s)
        written = await writer.replace_conditions(ns, "inference", *INFERENCE_READY)
        assert set(_conditions(written)) == {c["type"] for c in INFERENCE_READY}
        written = await writer.replace_conditions(ns, "inference", *CRASHING)
        assert _conditions(written)["InferenceReady"]["status"] == "False"
        written = await kaito_annotation_update(k8s, ns, "inference", "1")
        assert written["metadata"]["annotations"]["kaito.sh/test-reconciled"] == "1"


# -- (b) status.status in the new object is refused --------------------------------------
async def test_writing_status_status_is_denied(
    k8s: Client, namespace: str, kaito_webhook: KaitoWebhook
) -> None:
    ns = namespace
    await create_workspace(k8s, ns, "ws")
    async with registered(k8s, kaito_webhook):
        with pytest.raises(ApiError) as denied:
            await k8s.patch_status(WORKSPACE, "ws", {"status": {"status": "Pending"}}, namespace=ns)
        err = denied.value
        print(f"\n(b) merge patch status.status: {err.status} {err.reason}: {err.message}")
        assert (err.status, err.reason, err.message) == (400, "BadRequest", NEW_HAS_STATUS)
        assert (await k8s.get(WORKSPACE, "ws", ns)).get("status", {}).get("status") is None


# -- (c) a condition of a type KAITO does not know is fine -------------------------------
async def test_foreign_condition_type_is_allowed(
    k8s: Client, namespace: str, kaito_webhook: KaitoWebhook
) -> None:
    ns = namespace
    await create_workspace(k8s, ns, "ws")
    async with registered(k8s, kaito_webhook):
        patch = [{"op": "add", "path": "/status", "value": {"conditions": [record("Ready")]}}]
        written = await k8s.patch_status(
            WORKSPACE, "ws", patch, namespace=ns, patch_type=PatchType.JSON
        )
        assert _conditions(written)[RECORD]["reason"] == "Ready"
        # KAITO's next status write keeps it (its typed round trip keeps unknown types).
        written = await KaitoWriter(k8s).replace_conditions(ns, "ws", *INFERENCE_READY)
        assert _conditions(written)[RECORD]["reason"] == "Ready"


# -- (d) once stored, status.status makes KAITO's own writes fail -------------------------
async def test_kaito_writes_are_denied_while_status_status_is_stored(
    k8s: Client, namespace: str, kaito_webhook: KaitoWebhook
) -> None:
    ns = namespace
    await create_workspace(k8s, ns, "ws", metadata={"finalizers": [KAITO_FINALIZER]})
    await k8s.patch_status(WORKSPACE, "ws", {"status": {"status": "Pending"}}, namespace=ns)
    async with registered(k8s, kaito_webhook):

        async def refused(what: str, write: Awaitable[Obj], message: str) -> None:
            with pytest.raises(ApiError) as caught:
                await write
            err = caught.value
            print(f"(d) {what}: {err.status} {err.reason}: {err.message}")
            assert (err.status, err.reason, err.message) == (400, "BadRequest", message)

        print()
        # KAITO's status PUT carries no status.status (its type drops it); the stored
        # old object does.
        await refused(
            "KAITO status PUT",
            KaitoWriter(k8s).replace_conditions(ns, "ws", *INFERENCE_READY),
            OLD_HAS_STATUS,
        )
        # A main-resource write keeps the stored status, so the new object has it too.
        await refused(
            "annotation merge patch", merge_annotation(k8s, ns, "ws", "1"), NEW_HAS_STATUS
        )
        await refused("annotation PUT", kaito_annotation_update(k8s, ns, "ws", "1"), NEW_HAS_STATUS)
        # Nobody can take the field away either: the old object still has it.
        await refused(
            "JSON patch removing status.status",
            k8s.patch_status(
                WORKSPACE,
                "ws",
                [{"op": "remove", "path": "/status/status"}],
                namespace=ns,
                patch_type=PatchType.JSON,
            ),
            OLD_HAS_STATUS,
        )
        # DELETE is not among the webhook's verbs, but KAITO's finalizer removal is an
        # UPDATE: the workspace stays Terminating.
        await k8s.delete(WORKSPACE, "ws", ns)
        await refused(
            "finalizer removal",
            k8s.patch(WORKSPACE, "ws", {"metadata": {"finalizers": None}}, namespace=ns),
            NEW_HAS_STATUS,
        )
        stored = await k8s.get(WORKSPACE, "ws", ns)
        assert stored["status"]["status"] == "Pending"
        assert stored["metadata"].get("deletionTimestamp")
        assert "kaito.sh/test-reconciled" not in (stored["metadata"].get("annotations") or {})
    # Without the webhook the finalizer can go, and the workspace with it.
    await k8s.patch(WORKSPACE, "ws", {"metadata": {"finalizers": None}}, namespace=ns)


# -- (e) the operator beside the webhook -------------------------------------------------
async def test_operator_never_gets_kaito_refused(
    k8s: Client,
    namespace: str,
    kaito_webhook: KaitoWebhook,
    start_operator: OperatorFactory,
    auditor: TransitionAuditor,
) -> None:
    """With the webhook registered, KAITO's writes all pass, the record condition tracks
    Pending → Ready → NotReady → Ready, and one warning explains the missing field."""
    ns, name = namespace, "phi"
    async with registered(k8s, kaito_webhook):
        op = await start_operator(f"--namespace={ns}", "--log-level=debug").wait_ready()
        writer = KaitoWriter(k8s)
        await create_workspace(k8s, ns, name)

        async def recorded(state: str) -> None:
            async def check() -> bool:
                ws = await k8s.get(WORKSPACE, name, ns)
                return _conditions(ws).get(RECORD, {}).get("reason") == state

            async def seen() -> str:
                ws = await k8s.get(WORKSPACE, name, ns)
                return f"status {ws.get('status')}; events {await _events(k8s, ns, name)}"

            await eventually(check, 20, f"the record to hold {state}", describe=seen)

        await recorded("Pending")
        for step, conditions, state in (
            ("1", INFERENCE_READY, "Ready"),
            ("2", CRASHING, "NotReady"),
            ("3", INFERENCE_READY, "Ready"),
        ):
            # Each raises if the webhook refuses it; the retries cover our 409s.
            await writer.replace_conditions(ns, name, *conditions)
            await kaito_annotation_update(k8s, ns, name, step)
            await recorded(state)

        events = await _events(k8s, ns, name)
        problems = [_line(e) for e in _log(op.log_path) if e.get("level") in ("warning", "error")]
        status = (await k8s.get(WORKSPACE, name, ns))["status"]
        print(f"\n(e) events: {json.dumps(events, indent=1)}")
        print(f"(e) warning/error log lines: {json.dumps(problems, indent=1)}")
        print(f"(e) status: {json.dumps(status, indent=1)}")
        assert auditor.changes_of(ns, name) == [], "status.status was stored"
        warnings = [e for e in events if e["type"] == "Warning" and e["reason"] != "NotReady"]
        assert len(warnings) == 1, f"expected one warning about status.status, got {warnings}"
        assert len(problems) == 1, f"expected one warning or error log line, got {problems}"


async def _events(k8s: Client, ns: str, name: str) -> list[Obj]:
    return [
        {k: e.get(k) for k in ("type", "reason", "message", "count")}
        for e in await events_for(k8s, ns, name)
    ]


def _log(path: Path) -> list[Obj]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _line(entry: Obj) -> Obj:
    return {k: entry[k] for k in ("level", "event", "reason", "namespace", "name") if k in entry}
