"""`python -m gateway` is the `gatehouse` command."""

import sys

from gateway.cli import main

sys.exit(main())
