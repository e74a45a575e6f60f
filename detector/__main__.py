"""``python -m detector``: the command line."""

import sys

from detector.cli import main

sys.exit(main())
