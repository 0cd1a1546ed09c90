"""Stages of ``run_analysis.py``, declared in ``registry.py`` (name, options, title, what each reads and
writes); each module here has ``run(ctx: RunContext) -> StageResult`` (``analysis.context``), called
through ``runner.stage_runner``."""
