"""`python -m vobiz_async.cli`: the `vobiz-recordings` command line."""

import sys

from . import main

sys.exit(main())
