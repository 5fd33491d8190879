import sys

from kapmonitor.cli import main

sys.exit(main())
