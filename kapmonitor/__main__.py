"""``python -m kapmonitor``: the same as the ``kapmonitor`` command."""

import sys

from kapmonitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
