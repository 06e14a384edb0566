"""`python -m experiments.predict` moved into the library: `python -m lipctr.predict` (or `lipctr-predict`).
This old spelling still runs it, after a one-line note saying so."""

import sys

from lipctr.predict import main

if __name__ == "__main__":
    print("note: python -m experiments.predict is now python -m lipctr.predict (or lipctr-predict)", file=sys.stderr)
    sys.exit(main())
