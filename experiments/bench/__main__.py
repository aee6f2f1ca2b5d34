"""`python -m experiments.bench`: see `experiments.bench` (its --help)."""

import sys

from experiments.bench import main

sys.exit(main())
