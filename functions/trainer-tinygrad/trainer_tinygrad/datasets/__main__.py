"""`python -m trainer_tinygrad.datasets`: the same command line as `trainer-datasets`."""

import sys

from .cli import main

sys.exit(main())
