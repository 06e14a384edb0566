"""`python -m experiments.report RUN_DIR...`: the paper's report (experiments.report.paper)."""

import sys

from experiments.report.paper import main

sys.exit(main())
