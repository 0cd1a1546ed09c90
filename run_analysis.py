#!/usr/bin/env python
"""``python run_analysis.py ...``: the analysis command of ``cli/run_analysis.py`` (installed: ``clade-analysis``)."""
import sys

from cli.run_analysis import main

if __name__ == "__main__":
    sys.exit(main())
