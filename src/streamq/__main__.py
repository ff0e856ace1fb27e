"""``python -m streamq``: the CLI."""

import sys

from streamq.cli import main

sys.exit(main())
