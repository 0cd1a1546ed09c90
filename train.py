#!/usr/bin/env python
"""``python train.py ...``: the training command of ``cli/train.py`` (installed: ``clade-train``)."""
import sys

from cli.train import command

if __name__ == "__main__":
    sys.exit(command())
