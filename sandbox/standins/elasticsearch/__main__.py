"""`python -m sandbox.standins.elasticsearch`: the stand-in as its own process (see the package docstring)."""

import sys

from sandbox.standins.elasticsearch import main

sys.exit(main())
