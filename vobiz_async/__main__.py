"""`python -m vobiz_async`: the `vobiz-recordings` command line."""

import sys

from .cli import main

sys.exit(main())
