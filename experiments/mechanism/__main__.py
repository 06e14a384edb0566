"""`python -m experiments.mechanism`: the mechanism study (experiments.mechanism.study)."""

import sys

from experiments.mechanism.study import main

sys.exit(main())
