"""Stages of ``run_analysis.py``: each module has ``run(ctx) -> dict`` and optional ``add_arguments(group)``."""
