"""``python -m minivae ...`` is the same as the ``minivae`` command."""

import sys

from .run.cli import main

sys.exit(main())
