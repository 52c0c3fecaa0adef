"""``python -m examples.cronjob``: see ``main``."""

import sys

from examples.cronjob.main import main

sys.exit(main())
