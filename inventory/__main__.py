"""`python -m inventory`: see `inventory.cli`."""

import sys

from inventory.cli import main

sys.exit(main())
