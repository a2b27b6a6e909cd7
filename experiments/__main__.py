"""``python -m experiments``: the same CLI as ``run.py`` and the ``reparl`` script."""

import sys

from experiments.cli import main

sys.exit(main())
