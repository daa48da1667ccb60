"""``python -m genvae`` runs the ``genvae`` command."""

import sys

from .cli import main

sys.exit(main())
