"""``python -m arrayrl``: the same entry point as the ``arrayrl`` command (:func:`arrayrl.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
