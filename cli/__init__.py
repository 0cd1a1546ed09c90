"""The two commands, the top layer: ``run_analysis`` (every analysis stage) and ``train`` (one generator).

Installed as ``clade-analysis`` and ``clade-train``; ``python run_analysis.py`` / ``python train.py``
in the repository run the same ``main``."""
