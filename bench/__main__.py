"""``python -m bench``: every bench with short defaults, one summary table (see bench/run_all.py)."""

from bench.run_all import main

raise SystemExit(main())
