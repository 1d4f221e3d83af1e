"""``python -m h5pool``: the same as the ``h5pool`` command."""

import sys

from h5pool.cli.main import main

sys.exit(main())
