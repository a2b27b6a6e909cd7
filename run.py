"""reparl's command line: ``python run.py train CONFIG`` / ``python run.py eval RUN_DIR`` (see ``--help``)."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
