"""`python -m sandbox.standins.rethinkdb`: the stand-in as its own process (see the package docstring)."""

import sys

from sandbox.standins.rethinkdb import main

sys.exit(main())
