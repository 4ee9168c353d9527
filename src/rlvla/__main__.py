"""``python -m rlvla`` is the ``rlvla`` command."""

import sys

from rlvla.cli import main

sys.exit(main())
