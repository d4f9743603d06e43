"""`python -m routing ...`; see routing.cli."""

import os
import sys

from routing.cli import main

status = main()
sys.stdout.flush()
sys.stderr.flush()
# Skip interpreter teardown (solver extension modules take ~0.2 s to unload): the time limit
# covers the whole process.
os._exit(status)
