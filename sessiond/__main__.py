"""python -m sessiond: the daemon."""

import sys

from sessiond.launch import main

sys.exit(main())
