"""Offline checks of config/crd: our Workspace CRD against KAITO's and KAITO's examples.

The schema check is a small structural validator (type, required, enum, properties,
additionalProperties, items, allOf, string length and pattern, minimum). Unlike the API
server, which prunes unknown fields, it rejects them, so a typo in an example or a field
our CRD lost shows up here. Whether a real API server accepts the CRD is tested elsewhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.workspace.fsm import WorkspaceState

ROOT = Path(__file__).resolve().parents[2]
OURS = ROOT / "config" / "crd" / "kaito.sh_workspaces.yaml"
KUSTOMIZATION = ROOT / "config" / "crd" / "kustomization.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "kaito"
KAITOS = FIXTURES / "kaito.sh_workspaces.yaml"

CONDITION_COLUMNS = ["ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded"]


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def versions(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in crd["spec"]["versions"]}


def schema_of(crd: dict[str, Any], version: str) -> dict[str, Any]:
    schema = versions(crd)[version]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


OUR_CRD = load(OURS)
KAITO_CRD = load(KAITOS)
VERSIONS = ["v1alpha1", "v1beta1"]


# --- a minimal structural validator ------------------------------------------------------

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Violations of `schema` by `value`, each prefixed with its path."""
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += validate(value, sub, path)
    expected = schema.get("type")
    if expected is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _JSON_TYPES[expected]) or (is_bool and expected != "boolean"):
            return [*errors, f"{path or '.'}: expected {expected}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: does not match {schema['pattern']}")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and value < schema.get("minimum", value):
        errors.append(f"{path}: below {schema['minimum']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        errors += _validate_object(value, schema, path)
    return errors


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    if path == ".metadata":
        return []  # ObjectMeta is validated by the API server itself, not by the CRD.
    errors = [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            errors += validate(item, properties[key], f"{path}.{key}")
        elif isinstance(additional, dict):
            errors += validate(item, additional, f"{path}.{key}")
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{path}.{key}: unknown field")
    return errors


def test_validator_reports_what_it_should() -> None:
    schema = schema_of(OUR_CRD, "v1beta1")
    broken = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"anything": "goes"},
        "resource": {"count": "1", "partition": {"mode": "whole"}},
        "inferenec": {},
        "tuning": {"method": "qlora", "input": {"urls": [3]}},
        "status": {"conditions": [{"type": "-bad", "status": "Yes", "reason": ""}]},
    }
    assert sorted(validate(broken, schema)) == sorted(
        [
            ".resource.labelSelector: required",
            ".resource.count: expected integer, got str",
            # KAITO's schema states this enum twice, in an allOf.
            ".resource.partition.mode: 'whole' not in ['mig', 'accelerator']",
            ".resource.partition.mode: 'whole' not in ['mig', 'accelerator']",
            ".inferenec: unknown field",
            ".tuning.output: required",
            ".tuning.input.urls[0]: expected string, got int",
            ".status.conditions[0].lastTransitionTime: required",
            ".status.conditions[0].message: required",
            ".status.conditions[0].type: does not match "
            + schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"][
                "type"
            ]["pattern"],
            ".status.conditions[0].status: 'Yes' not in ['True', 'False', 'Unknown']",
            ".status.conditions[0].reason: shorter than 1",
            ".status.conditions[0].reason: does not match ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        ]
    )


# --- our CRD ---------------------------------------------------------------------------


def test_identity_matches_kaito() -> None:
    assert OUR_CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert OUR_CRD["kind"] == "CustomResourceDefinition"
    assert OUR_CRD["metadata"]["name"] == "workspaces.kaito.sh"
    for key in ("group", "names", "scope"):
        assert OUR_CRD["spec"][key] == KAITO_CRD["spec"][key]
    assert OUR_CRD["spec"]["names"]["kind"] == "Workspace"
    assert OUR_CRD["spec"]["names"]["plural"] == "workspaces"


def test_versions_serving_and_storage() -> None:
    served = {name: (v["served"], v["storage"]) for name, v in versions(OUR_CRD).items()}
    assert served == {"v1alpha1": (True, False), "v1beta1": (True, True)}


@pytest.mark.parametrize("version", VERSIONS)
def test_status_subresource(version: str) -> None:
    assert versions(OUR_CRD)[version]["subresources"] == {"status": {}}


@pytest.mark.parametrize("version", VERSIONS)
def test_status_status_enum_is_the_state_machine_states(version: str) -> None:
    field = schema_of(OUR_CRD, version)["properties"]["status"]["properties"]["status"]
    assert field["type"] == "string"
    assert field["enum"] == [s.value for s in WorkspaceState]
    assert field["enum"] == ["Pending", "Ready", "NotReady", "Running", "Succeeded", "Failed"]


@pytest.mark.parametrize("version", VERSIONS)
def test_schema_is_kaitos_plus_status_status(version: str) -> None:
    ours = copy.deepcopy(schema_of(OUR_CRD, version))
    del ours["properties"]["status"]["properties"]["status"]
    assert ours == schema_of(KAITO_CRD, version)


def test_kaitos_status_fields_are_kept() -> None:
    status = schema_of(OUR_CRD, "v1beta1")["properties"]["status"]["properties"]
    assert {"state", "targetNodeCount", "workerNodes", "conditions", "performance"} <= set(status)


@pytest.mark.parametrize("version", VERSIONS)
def test_printer_columns(version: str) -> None:
    columns = versions(OUR_CRD)[version]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    wide = [c["name"] for c in columns]
    assert default == ["Instance", "Status", "Age"]
    assert wide == ["Instance", "Status", *CONDITION_COLUMNS, "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Instance"]["jsonPath"] == ".resource.instanceType"
    assert by_name["Status"]["jsonPath"] == (
        '.status.conditions[?(@.type=="workspace-status.kaito.sh/State")].reason'
    )
    assert by_name["Age"] == {
        "jsonPath": ".metadata.creationTimestamp",
        "name": "Age",
        "type": "date",
    }
    for name in CONDITION_COLUMNS:
        assert by_name[name] == {
            "jsonPath": f'.status.conditions[?(@.type=="{name}")].status',
            "name": name,
            "priority": 1,
            "type": "string",
        }


def test_header_names_the_source() -> None:
    header = OURS.read_text().split("\n---\n", 1)[0]
    assert "kaito-project/kaito config/crd/bases/kaito.sh_workspaces.yaml" in header
    assert "056b8280b1a8debf644bc6f4399e913a1f9c7e70" in header
    assert "Apache License 2.0" in header


def test_kustomization_lists_the_crd() -> None:
    kustomization = load(KUSTOMIZATION)
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [OURS.name]


# --- KAITO's examples and status as KAITO and we write it ---------------------------------


def example_workspaces() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(FIXTURES.glob("*.yaml"))
        if path != KAITOS
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "Workspace"
    ]


EXAMPLES = example_workspaces()


def test_examples_cover_both_versions() -> None:
    assert {doc["apiVersion"] for _, doc in EXAMPLES} == {"kaito.sh/v1alpha1", "kaito.sh/v1beta1"}
    assert len(EXAMPLES) == 8


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_is_valid_against_our_crd(name: str, doc: dict[str, Any]) -> None:
    group, version = doc["apiVersion"].split("/")
    assert group == OUR_CRD["spec"]["group"]
    assert validate(doc, schema_of(OUR_CRD, version)) == []


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def with_status(version: str, state: object) -> dict[str, Any]:
    _, doc = next(d for d in EXAMPLES if d[1]["apiVersion"] == f"kaito.sh/{version}")
    status: dict[str, Any] = {
        "workerNodes": ["aks-ws-0"],
        "conditions": [
            condition("ResourceReady", "True", "workspaceResourceStatusSuccess"),
            condition("InferenceReady", "False", "ContainerCrashLoopBackOff"),
        ],
        "status": state,
    }
    if version == "v1beta1":
        status |= {"state": "NotReady", "targetNodeCount": 1}
    return {**doc, "status": status}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("state", [s.value for s in WorkspaceState])
def test_status_written_by_kaito_and_us_is_valid(version: str, state: str) -> None:
    assert validate(with_status(version, state), schema_of(OUR_CRD, version)) == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("state", ["Bogus", "ready", "", 1])
def test_status_outside_the_enum_is_rejected(version: str, state: object) -> None:
    assert validate(with_status(version, state), schema_of(OUR_CRD, version)) != []
