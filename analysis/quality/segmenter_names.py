"""Names of the papers' segmenters and which dataset preset each scores: plain constants (no torch),
read by the command line (``analysis/options.py``) and by ``analysis/quality/paper_segmenters``.

    --segmenter paper          the network of the run's preset (PRESET_SEGMENTER)
    --segmenter drn-d-105      that network, whatever the preset
    --segmenter FILE.pt        a TorchScript segmenter
"""
from __future__ import annotations

from data.presets import PRESET_ALIASES

PAPER = "paper"   # --segmenter value: the published network of the run's preset
PAPER_SEGMENTER_NAMES = ("drn-d-105", "upernet-101", "deeplabv2")
DISPLAY_NAMES = {"drn-d-105": "DRN-D-105", "upernet-101": "UPerNet-101", "deeplabv2": "DeepLabV2"}
PRESET_SEGMENTER = {"cityscapes": "drn-d-105", "ade20k": "upernet-101", "ade20k-outdoor": "upernet-101",
                    "coco-stuff": "deeplabv2"}
# What --segmenter-weights names, as the releases are downloaded.
RELEASED_FILES = {
    "drn-d-105": "drn-d-105_ms_cityscapes.pth (github.com/fyu/drn)",
    "upernet-101": "the folder ade20k-resnet101-upernet/ holding encoder_epoch_50.pth and decoder_epoch_50.pth "
                   "(github.com/CSAILVision/semantic-segmentation-pytorch)",
    "deeplabv2": "deeplabv2_resnet101_msc-cocostuff164k-100000.pth (github.com/kazuto1011/deeplab-pytorch)",
}
PRECISIONS = ("fp32", "bf16")
UPERNET_IMG_SIZES = (300, 375, 450, 525, 600)   # UPerNet's test short sides: its config's DATASET.imgSizes


def paper_segmenter_name(segmenter: str, preset: str) -> str:
    """The network ``--segmenter`` names for ``preset`` (``paper``: the preset's); ValueError otherwise."""
    if segmenter in PAPER_SEGMENTER_NAMES:
        return segmenter
    if segmenter == PAPER:
        preset = PRESET_ALIASES.get(preset, preset)
        if preset not in PRESET_SEGMENTER:
            raise ValueError(f"--segmenter paper: the papers score no preset {preset!r} (they score "
                             f"{', '.join(f'{p} with {n}' for p, n in PRESET_SEGMENTER.items())}); name the network "
                             f"with --segmenter {'|'.join(PAPER_SEGMENTER_NAMES)}")
        return PRESET_SEGMENTER[preset]
    raise ValueError(f"--segmenter {segmenter!r}: expected {PAPER!r}, one of {PAPER_SEGMENTER_NAMES} or a "
                     f"TorchScript file")


def is_paper_segmenter(segmenter) -> bool:
    """Whether a --segmenter value names a published network (or ``paper``), not a TorchScript file."""
    return str(segmenter) in (PAPER, *PAPER_SEGMENTER_NAMES)


def parse_size(text: str, flag: str = "--segmenter-size") -> tuple[int, int]:
    """'WxH' (as the tables print sizes, e.g. 512x256) -> (H, W); ValueError naming ``flag`` otherwise."""
    width, sep, height = str(text).lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise ValueError(f"{flag} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 512x256")
    return int(height), int(width)
