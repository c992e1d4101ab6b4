"""`python -m trainer_conformance`: the same as the `trainer-conformance` console script."""

from .cli import main

raise SystemExit(main())
