#!/usr/bin/env python3
"""Entry point of `ddpbench report` (the C++ subcommand execs this): scaling and comparison reports
from result documents. Run it directly the same way: reports/report.py RUN... [--baseline ...]."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ddpbench_report.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
