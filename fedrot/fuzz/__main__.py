"""Entry point of ``python -m fedrot.fuzz`` (see :mod:`fedrot.fuzz.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
