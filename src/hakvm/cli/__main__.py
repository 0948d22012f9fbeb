"""`python -m hakvm.cli`: how the drills, the demo and the tests start hakvm."""

import sys

from hakvm.cli.main import main

sys.exit(main())
