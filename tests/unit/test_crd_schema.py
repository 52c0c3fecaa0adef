"""``controllers.workspace.crd``: what KAITO's CRD lacks, and the JSON patch that adds it.

KAITO's real CRDs (v0.8.1 and v0.12.0, tests/fixtures/kaito) patched with the ops must
carry our field and column exactly as config/crd does, and nothing else may change.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonpatch import apply_patch

from controllers.workspace import crd
from controllers.workspace.fsm import WorkspaceState

ROOT = Path(__file__).resolve().parents[2]
OURS = ROOT / "config" / "crd" / "kaito.sh_workspaces.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "kaito"
KAITO = {
    "v0.12.0": FIXTURES / "kaito.sh_workspaces.yaml",
    "v0.8.1": FIXTURES / "v0.8.1" / "kaito.sh_workspaces.yaml",
}
FIELD = ("schema", "openAPIV3Schema", "properties", "status", "properties", "status")

Obj = dict[str, Any]


def load(path: Path, resource_version: str = "41") -> Obj:
    """A CRD as the API server returns it: with a resourceVersion."""
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["resourceVersion"] = resource_version
    assert isinstance(doc, dict)
    return doc


def versions(doc: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in doc["spec"]["versions"]}


def dig(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def patched(doc: Obj) -> Obj:
    out = apply_patch(doc, crd.patch_ops(doc))
    assert isinstance(out, dict)
    return out


def without_ours(doc: Obj) -> Obj:
    """``doc`` minus our field and our column: what must equal the original."""
    out = copy.deepcopy(doc)
    for v in out["spec"]["versions"]:
        dig(v, FIELD[:-1]).pop("status", None)
        v["additionalPrinterColumns"] = [
            c for c in v["additionalPrinterColumns"] if c != crd.STATUS_COLUMN
        ]
    return out


OUR_CRD = load(OURS)


# --- one source of truth --------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_config_crd_carries_exactly_the_field_and_column(version: str) -> None:
    v = versions(OUR_CRD)[version]
    assert dig(v, FIELD) == crd.field_schema()
    columns = v["additionalPrinterColumns"]
    status_columns = [c for c in columns if c["jsonPath"] == crd.STATUS_JSON_PATH]
    assert status_columns == [crd.status_column()]
    assert crd.AGE_COLUMN in v["additionalPrinterColumns"]


def test_the_enum_is_the_state_machine() -> None:
    assert crd.field_schema()["enum"] == [s.value for s in WorkspaceState]


def test_constants_are_read_only_and_copies_are_fresh() -> None:
    with pytest.raises(TypeError):
        crd.STATUS_FIELD["type"] = "integer"  # type: ignore[index]
    first = crd.field_schema()
    first["enum"].append("Exploded")
    assert "Exploded" not in crd.field_schema()["enum"]


# --- our CRD and KAITO's ----------------------------------------------------------------


def test_our_crd_is_complete_and_needs_no_ops() -> None:
    report = crd.inspect(OUR_CRD)
    assert report.complete
    assert [(v.name, v.served, v.complete) for v in report.versions] == [
        ("v1alpha1", True, True),
        ("v1beta1", True, True),
    ]
    assert report.describe_missing() == ""
    assert crd.patch_ops(OUR_CRD) == []


@pytest.mark.parametrize("release", KAITO)
def test_kaitos_crd_lacks_field_and_column_in_every_version(release: str) -> None:
    report = crd.inspect(load(KAITO[release]))
    assert not report.complete
    assert report.resource_version == "41"
    assert report.describe_missing() == (
        "v1alpha1: status.status, STATUS column; v1beta1: status.status, STATUS column"
    )


@pytest.mark.parametrize("release", KAITO)
def test_patched_kaito_crd_has_our_field_and_column(release: str) -> None:
    kaito = load(KAITO[release])
    out = patched(kaito)
    assert crd.inspect(out).complete
    for name, ours in versions(OUR_CRD).items():
        theirs = versions(out)[name]
        assert dig(theirs, FIELD) == dig(ours, FIELD)
        columns = theirs["additionalPrinterColumns"]
        # Where a user expects it: right after Instance, as in our CRD.
        assert [c["name"] for c in columns[:2]] == ["Instance", "Status"]
        assert columns[1] == ours["additionalPrinterColumns"][1]
        assert columns[-1]["name"] == "Age"


def test_patched_kaito_v0_12_schema_is_ours() -> None:
    out = patched(load(KAITO["v0.12.0"]))
    for name, ours in versions(OUR_CRD).items():
        assert versions(out)[name]["schema"] == ours["schema"]


@pytest.mark.parametrize("release", KAITO)
def test_the_patch_adds_exactly_what_is_missing(release: str) -> None:
    kaito = load(KAITO[release])
    out = patched(kaito)
    assert without_ours(out) == kaito
    # KAITO's own columns stay, in KAITO's order (v0.12.0: TargetNodeCount and State).
    for name, v in versions(kaito).items():
        names = [c["name"] for c in versions(out)[name]["additionalPrinterColumns"]]
        kaitos = [c["name"] for c in v["additionalPrinterColumns"]]
        assert names == [kaitos[0], "Status", *kaitos[1:]]


@pytest.mark.parametrize("release", KAITO)
def test_the_patch_is_idempotent(release: str) -> None:
    out = patched(load(KAITO[release]))
    assert crd.patch_ops(out) == []
    assert patched(out) == out


def test_the_patch_is_guarded_by_the_resource_version() -> None:
    kaito = load(KAITO["v0.12.0"], resource_version="41")
    ops = crd.patch_ops(kaito)
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "41"}
    assert [op["op"] for op in ops[1:]] == ["add"] * (len(ops) - 1)
    # Applied to a CRD re-applied meanwhile, the patched object names the old version,
    # which the API server refuses as a stale precondition (409).
    reapplied = {**kaito, "metadata": {**kaito["metadata"], "resourceVersion": "42"}}
    assert apply_patch(reapplied, ops)["metadata"]["resourceVersion"] == "41"


# --- other shapes: an extra version, missing levels, columns elsewhere ------------------


def kaito_with_extra_version(**changes: Callable[[Obj], None]) -> Obj:
    """KAITO v0.12.0 plus a served, non-storage ``v1`` whose copy ``change`` alters."""
    doc = load(KAITO["v0.12.0"])
    extra = copy.deepcopy(versions(doc)["v1beta1"])
    extra.update(name="v1", served=True, storage=False)
    for change in changes.values():
        change(extra)
    doc["spec"]["versions"].append(extra)
    return doc


def _no_status_properties(v: Obj) -> None:
    dig(v, FIELD[:-3])["status"] = {"type": "object", "description": "bare"}


def _no_status(v: Obj) -> None:
    del dig(v, FIELD[:-3])["status"]


def _no_root_properties(v: Obj) -> None:
    schema = dig(v, FIELD[:2])
    schema.clear()
    schema.update(type="object", **{"x-kubernetes-preserve-unknown-fields": True})


def _no_columns(v: Obj) -> None:
    del v["additionalPrinterColumns"]


def _empty_columns(v: Obj) -> None:
    v["additionalPrinterColumns"] = []


def _no_instance_column(v: Obj) -> None:
    v["additionalPrinterColumns"] = v["additionalPrinterColumns"][1:]


def _only_custom_columns(v: Obj) -> None:
    v["additionalPrinterColumns"] = [{"jsonPath": ".spec.x", "name": "X", "type": "string"}]


SHAPES: dict[str, Callable[[Obj], None]] = {
    "as-is": lambda v: None,
    "status-without-properties": _no_status_properties,
    "no-status": _no_status,
    "no-root-properties": _no_root_properties,
    "no-columns": _no_columns,
    "empty-columns": _empty_columns,
    "no-instance-column": _no_instance_column,
    "only-custom-columns": _only_custom_columns,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_an_extra_version_is_completed_too(shape: str) -> None:
    doc = kaito_with_extra_version(shape=SHAPES[shape])
    report = crd.inspect(doc)
    assert [v.name for v in report.versions if not v.complete] == ["v1alpha1", "v1beta1", "v1"]
    out = patched(doc)
    assert crd.inspect(out).complete
    assert crd.patch_ops(out) == []
    v1 = versions(out)["v1"]
    assert dig(v1, FIELD) == crd.field_schema()
    assert crd.status_column() in v1["additionalPrinterColumns"]
    # Every level created on the way is a structural schema: objects say their type.
    status = dig(v1, FIELD[:-2])
    assert status.get("type") == "object"
    # The other versions are patched as without the extra one.
    for name in ("v1alpha1", "v1beta1"):
        assert versions(out)[name] == versions(patched(load(KAITO["v0.12.0"])))[name]


def test_status_column_placement_follows_kaitos_columns() -> None:
    def names(shape: Callable[[Obj], None]) -> list[str]:
        v1 = versions(patched(kaito_with_extra_version(shape=shape)))["v1"]
        return [c["name"] for c in v1["additionalPrinterColumns"]]

    assert names(_no_columns) == ["Status", "Age"]  # the API server's default AGE is kept
    assert names(_empty_columns) == ["Status", "Age"]
    assert names(_no_instance_column)[-2:] == ["Status", "Age"]  # before AGE
    assert names(_only_custom_columns) == ["X", "Status"]  # at the end


def test_an_unserved_version_is_completed_too() -> None:
    doc = kaito_with_extra_version(unserved=lambda v: v.update(served=False))
    report = crd.inspect(doc)
    assert [(v.name, v.served) for v in report.versions][-1] == ("v1", False)
    assert crd.inspect(patched(doc)).complete


def test_a_version_without_a_schema_gets_no_field_op() -> None:
    """apiextensions.k8s.io/v1 requires a schema; inventing one would prune everything."""
    doc = kaito_with_extra_version(no_schema=lambda v: v.pop("schema"))
    out = patched(doc)
    assert "schema" not in versions(out)["v1"]
    assert not crd.inspect(out).versions[-1].has_field
    assert crd.inspect(out).versions[-1].has_column
    assert crd.patch_ops(out) == []  # nothing more can be added: no patch loop


@pytest.mark.parametrize(
    ("enum", "complete"),
    [
        ([s.value for s in WorkspaceState], True),
        ([*(s.value for s in WorkspaceState), "Paused"], True),  # a newer release's enum
        (["Pending", "Ready"], False),
        (None, False),
    ],
)
def test_a_field_is_ours_when_its_enum_allows_every_state(
    enum: list[str] | None, complete: bool
) -> None:
    doc = patched(load(KAITO["v0.12.0"]))
    for v in doc["spec"]["versions"]:
        field = dig(v, FIELD)
        field.pop("enum")
        if enum is not None:
            field["enum"] = enum
    assert crd.inspect(doc).complete is complete
    if not complete:
        # "add" onto an existing member replaces it with ours.
        assert dig(versions(patched(doc))["v1beta1"], FIELD) == crd.field_schema()


def test_a_moved_or_renamed_status_column_is_left_alone() -> None:
    doc = patched(load(KAITO["v0.12.0"]))
    for v in doc["spec"]["versions"]:
        columns = v["additionalPrinterColumns"]
        column = columns.pop(1)
        columns.append({**column, "name": "Phase", "priority": 1})
    assert crd.inspect(doc).complete
    assert crd.patch_ops(doc) == []


# --- the cache projection ---------------------------------------------------------------


def cases() -> dict[str, Obj]:
    docs = {f"kaito-{r}": load(p) for r, p in KAITO.items()}
    docs["ours"] = OUR_CRD
    for shape, change in SHAPES.items():
        docs[f"extra-{shape}"] = kaito_with_extra_version(shape=change)
    docs["no-schema"] = kaito_with_extra_version(shape=lambda v: v.pop("schema"))
    return docs


CASES = cases()


@pytest.mark.parametrize("name", CASES)
def test_the_projection_answers_like_the_full_object(name: str) -> None:
    doc = CASES[name]
    small = crd.project(copy.deepcopy(doc))
    assert crd.inspect(small) == crd.inspect(doc)
    assert crd.patch_ops(small) == crd.patch_ops(doc)
    assert len(json.dumps(small)) < len(json.dumps(doc)) / 5


def test_the_projection_keeps_who_wrote_it_and_drops_the_rest() -> None:
    doc = load(KAITO["v0.12.0"])
    doc["metadata"]["annotations"] = {
        "meta.helm.sh/release-name": "kaito-workspace",
        "meta.helm.sh/release-namespace": "kaito-workspace",
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(doc),
    }
    doc["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Update", "time": "2026-01-01T00:00:00Z"},
        {
            "manager": "helm",
            "operation": "Update",
            "time": "2026-02-01T00:00:00Z",
            "fieldsV1": {"f:spec": {}},
        },
    ]
    small = crd.project(doc)
    assert small["metadata"]["annotations"] == {
        "meta.helm.sh/release-name": "kaito-workspace",
        "meta.helm.sh/release-namespace": "kaito-workspace",
    }
    assert "fieldsV1" not in json.dumps(small)
    assert crd.last_writer(small) == "helm (Update)"
    assert crd.helm_release(small) == "kaito-workspace/kaito-workspace"
    assert crd.last_writer(OUR_CRD) is None
    assert crd.helm_release(OUR_CRD) is None


# --- the commands the error line gives ---------------------------------------------------


def test_the_kubectl_command_carries_the_ops() -> None:
    ops = crd.patch_ops(load(KAITO["v0.12.0"]))
    words = shlex.split(crd.kubectl_patch_command(ops))
    assert words[:5] == ["kubectl", "patch", "crd", "workspaces.kaito.sh", "--type=json"]
    assert words[5] == "-p"
    assert json.loads(words[6]) == ops


def test_the_module_prints_the_ops_for_a_crd_on_stdin() -> None:
    kaito = load(KAITO["v0.8.1"])
    for doc, want in ((kaito, crd.patch_ops(kaito)), (OUR_CRD, [])):
        proc = subprocess.run(
            [sys.executable, "-m", "controllers.workspace.crd"],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
        assert json.loads(proc.stdout) == want
        assert ("missing: v1alpha1" in proc.stderr) == bool(want)


@pytest.mark.parametrize("release", KAITO)
def test_without_the_field_only_the_column_is_added(release: str) -> None:
    kaito = load(KAITO[release])
    ops = crd.patch_ops(kaito, with_field=False)
    assert all("additionalPrinterColumns" in op["path"] for op in ops[1:])
    out = apply_patch(kaito, ops)
    assert crd.inspect(out, with_field=False).complete
    assert not crd.inspect(out).complete
    assert crd.patch_ops(out, with_field=False) == []
