"""python -m sessiond: the daemon."""

import sys

from .daemon import main

sys.exit(main())
