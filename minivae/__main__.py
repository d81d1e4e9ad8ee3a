"""``python -m minivae ...`` is the same as the ``minivae`` command."""

import sys

from .cli import main

sys.exit(main())
