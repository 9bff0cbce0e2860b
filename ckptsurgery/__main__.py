"""``python -m ckptsurgery``: the same as the ``ckptsurgery`` command."""

import sys

from .cli import main

sys.exit(main())
