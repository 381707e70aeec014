"""`python -m sandbox.simulator.rest_api`: rest-api as its own process (see the package docstring)."""

from sandbox.simulator.rest_api import main

main()
