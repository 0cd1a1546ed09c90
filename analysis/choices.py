"""The names that options offer as choices, apart from the code behind them, so that
``analysis.options`` (and with it ``train.py``) loads no probe or metric code.

The modules that implement the choices import their names from here."""

# analysis.quality.fid_protocol: against what a Frechet distance is computed.
PROTOCOLS = ("toolkit", "official")
# analysis.probe.variance: regression bases on the ICPE coordinates (name -> its terms).
BASES = {
    "linear": ("1", "dy", "dx"),
    "quadratic": ("1", "dy", "dx", "dy^2", "dx^2", "dy*dx"),
}
# analysis.quality.segmenter_io: label id -> segmenter class maps (the keys of its CLASS_MAPS) and
# how a segmenter expects its input, from images in [-1, 1].
CLASS_MAP_NAMES = ("identity", "cityscapes-train-ids")
INPUT_NORMS = ("imagenet", "cityscapes-drn", "caffe-bgr", "zero-one", "minus-one-one")
