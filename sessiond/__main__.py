"""python -m sessiond: the daemon."""

import sys

from sessiond.main import main

sys.exit(main())
