"""Moved to ``fileio.provenance`` (the bottom I/O layer); this name stays while other branches
still import it. New code imports ``fileio``."""
from fileio.provenance import device_description, git_commit, provenance

__all__ = ["device_description", "git_commit", "provenance"]
