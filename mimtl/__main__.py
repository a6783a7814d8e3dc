"""``python -m mimtl`` is the ``mimtl`` command."""

import sys

from mimtl.cli import main

sys.exit(main())
