"""Stages of ``run_analysis.py``: each module has ``run(ctx) -> dict``; its options are its dataclass in
``analysis.options`` (``ctx.<stage>``, resolved)."""
