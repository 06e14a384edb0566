"""`python -m experiments.bandwidth`: the supervision-bandwidth sweep (experiments.bandwidth.sweep)."""

import sys

from experiments.bandwidth.sweep import main

sys.exit(main())
