"""``python -m ckptsurgery``: the same as the ``ckptsurgery`` command."""

import sys

from .crashguard import console_main

sys.exit(console_main())
