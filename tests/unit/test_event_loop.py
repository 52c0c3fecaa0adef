"""--event-loop: uvloop when asked or available, asyncio's own otherwise."""

from __future__ import annotations

import sys

import anyio
import pytest

from controllers.workspace.operator import UsageError, _loop_options, parse_args


def test_the_default_is_auto() -> None:
    assert parse_args([]).event_loop == "auto"


def test_asyncio_asks_for_nothing() -> None:
    assert _loop_options("asyncio") == {}


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_runs_the_operator_loop_when_installed(choice: str) -> None:
    uvloop = pytest.importorskip("uvloop")
    options = _loop_options(choice)
    assert options == {"loop_factory": uvloop.new_event_loop}

    async def loop_module() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    assert anyio.run(loop_module, backend="asyncio", backend_options=options).startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    assert _loop_options("auto") == {}
    with pytest.raises(UsageError, match="uvloop is not installed"):
        _loop_options("uvloop")
