"""``python -m ckptsurgery``: the same as the ``ckptsurgery`` command."""

import sys

from .cli.crashguard import console_main

sys.exit(console_main())
