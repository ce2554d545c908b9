"""``python -m grid``: the command line (see :mod:`grid.cli`)."""

from __future__ import annotations

import sys

from grid.cli import main

if __name__ == "__main__":
    sys.exit(main())
