"""``python -m controllers``: the workspace-operator binary."""

from __future__ import annotations

import sys

from controllers.workspace.operator import main

if __name__ == "__main__":
    sys.exit(main())
