"""What importing a light part of the project pulls in.

The benchmark's kopf peer imports the Workspace state machine and models in a venv that
has pydantic but none of the framework's I/O dependencies, so the pure modules must not
import them, directly or through ``reconciler/__init__.py``.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("anyio", "aiohttp", "kubernetes_asyncio", "structlog", "prometheus_client")


def test_the_pure_workspace_modules_import_no_io_library() -> None:
    code = (
        "import sys\n"
        "import controllers.workspace.fsm, controllers.workspace.record\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_framework_names_still_import_from_the_package() -> None:
    code = "from reconciler import Builder, configure_logging; print(configure_logging.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "configure"
