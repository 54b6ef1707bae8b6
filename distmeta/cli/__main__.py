"""``python -m distmeta.cli``: the ``distmeta`` command."""

import sys

from distmeta.cli import main

sys.exit(main())
