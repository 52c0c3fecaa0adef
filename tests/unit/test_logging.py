"""Logging setup: JSON lines with the bound context, and nothing secret in them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from reconciler.logging import REDACTED, configure, redact_secrets

PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5ZMRW8GmrMHBEoAoGCCqGSM49\n"
    "-----END EC PRIVATE KEY-----"
)
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlc2lnbmF0dXJl"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", dict(event)))


# -- configure ----------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_level_logger_timestamp_and_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json", "info")
    log = structlog.get_logger("test.json").bind(component="unit")
    with structlog.contextvars.bound_contextvars(
        controller="workspace", namespace="ns", name="w", reconcile_id="abc123"
    ):
        log.info("reconciled", state="Ready")
    log.info("after")
    first, second = json_lines(capsys.readouterr().err)
    assert first["event"] == "reconciled"
    assert first["level"] == "info"
    assert first["logger"] == "test.json"
    assert first["state"] == "Ready"
    assert first["component"] == "unit"
    assert (first["controller"], first["namespace"], first["name"], first["reconcile_id"]) == (
        "workspace",
        "ns",
        "w",
        "abc123",
    )
    assert first["timestamp"].endswith("Z")
    # The context was only bound for the block.
    assert second["event"] == "after"
    assert "reconcile_id" not in second


@pytest.mark.usefixtures("restore_logging")
def test_level_filters_and_stdlib_records_share_the_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json", "warning")
    structlog.get_logger("test.level").info("hidden")
    structlog.get_logger("test.level").warning("shown")
    logging.getLogger("aiohttp.client").warning("Authorization: Bearer abc.def.ghi")
    lines = json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == [
        "shown",
        "Authorization: Bearer " + REDACTED,
    ]
    assert lines[1]["logger"] == "aiohttp.client"
    assert lines[1]["level"] == "warning"


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_rendered_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json")

    def call_api() -> None:
        raise RuntimeError(f"request failed with header Bearer {JWT}")

    try:
        call_api()
    except RuntimeError:
        structlog.get_logger("test.exc").exception("boom")
    (line,) = json_lines(capsys.readouterr().err)
    assert "RuntimeError" in line["exception"]
    assert JWT not in json.dumps(line)


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure("console", "debug")
    structlog.get_logger("test.console").debug("hello", token="t0ps3cret")
    err = capsys.readouterr().err
    assert "hello" in err
    assert "t0ps3cret" not in err
    assert REDACTED in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure("json", "chatty")


# -- redact_secrets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "bearer_token",
        "refreshToken",
        "password",
        "db_passwd",
        "Authorization",
        "client-key-data",
        "client_key",
        "client-certificate-data",
        "secret",
        "credentials",
    ],
)
def test_secret_looking_keys_are_hidden_whatever_their_value(key: str) -> None:
    out = redact(**{key: "s3cr3t-value", "event": "x"})
    assert out[key] == REDACTED
    out = redact(**{key: {"nested": "structure"}, "event": "x"})
    assert out[key] == REDACTED


def test_ordinary_keys_are_kept() -> None:
    event = {"event": "reconciled", "name": "w", "namespace": "ns", "count": 3, "ok": True}
    assert redact(**event) == event


def test_bearer_headers_are_hidden_in_text() -> None:
    out = redact(event="GET /api failed; sent Authorization: Bearer abc-123.xyz_987==")
    assert out["event"] == f"GET /api failed; sent Authorization: Bearer {REDACTED}"
    assert redact(event="bearer    lowercase-token")["event"] == f"Bearer {REDACTED}"


def test_pem_blocks_are_hidden_in_text() -> None:
    out = redact(event=f"loaded key:\n{PEM}\nand carried on")
    assert "PRIVATE KEY" not in out["event"]
    assert "MHcCAQEE" not in out["event"]
    assert out["event"] == f"loaded key:\n{REDACTED}\nand carried on"
    # A block cut off in the middle (say, a truncated message) is hidden to the end.
    truncated = redact(event="-----BEGIN CERTIFICATE-----\nMIIB...")
    assert truncated["event"] == REDACTED


def test_bare_jwts_are_hidden_in_text() -> None:
    out = redact(event=f"token review for {JWT} denied")
    assert out["event"] == f"token review for {REDACTED} denied"


def test_nested_values_are_redacted_by_key_and_by_content() -> None:
    kubeconfig = {
        "users": [
            {
                "name": "admin",
                "user": {"client-key-data": "LS0tLS1CRUdJTi", "token": "abc"},
            }
        ],
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1"}}],
        "notes": ("Bearer qwerty", PEM),
    }
    out = redact(event="loaded", config=kubeconfig)
    user = out["config"]["users"][0]["user"]
    assert user == {"client-key-data": REDACTED, "token": REDACTED}
    assert out["config"]["users"][0]["name"] == "admin"
    assert out["config"]["clusters"] == kubeconfig["clusters"]
    assert out["config"]["notes"] == [f"Bearer {REDACTED}", REDACTED]
    # The caller's object is not modified.
    assert kubeconfig["users"][0]["user"]["token"] == "abc"  # type: ignore[index]


@pytest.mark.parametrize("key", ["api_key", "apiKey", "private_key", "privateKey"])
def test_key_like_fields_are_redacted(key: str) -> None:
    out = redact_secrets(None, "info", {"event": "x", key: "s3cr3t"})
    assert out[key] == REDACTED
