"""What a segmenter takes and what its classes mean: input normalisations and class maps.

Shared by the TorchScript and proxy segmenters (``segmenters.py``) and the papers' networks
(``paper_segmenters/``). Images arrive in [-1, 1], RGB.

    x = normalize(images, "imagenet")                    # RGB in [0, 1], minus mean, over std
    target = map_labels(label, 19, CLASS_MAPS["cityscapes-train-ids"])
"""
from __future__ import annotations

import torch

from analysis.choices import INPUT_NORMS

IGNORE_INDEX = 255  # target value of pixels that are not scored (dontcare, unmapped classes)

# Cityscapes label id -> train id (cityscapesScripts labels.py); other ids are not scored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                                23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CLASS_MAPS = {"identity": None, "cityscapes-train-ids": CITYSCAPES_LABEL_TO_TRAIN_ID}

# Per-channel (mean, std) of the RGB image in [0, 1], or of BGR in [0, 255] for caffe-bgr.
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # fyu/drn datasets/cityscapes/info.json: what segment.py normalises the DRN's input with
    "cityscapes-drn": ((0.29010095242892997, 0.32808144844279574, 0.28696394422942517),
                       (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)),
    "caffe-bgr": ((104.008, 116.669, 122.675), (1.0, 1.0, 1.0)),
}


def normalize(images: torch.Tensor, input_norm: str) -> torch.Tensor:
    """Images in [-1, 1] (RGB) as a segmenter of ``input_norm`` (one of INPUT_NORMS) takes them."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm={input_norm!r}; expected one of {INPUT_NORMS}")
    if input_norm == "minus-one-one":
        return images
    x = (images + 1) / 2
    if input_norm == "zero-one":
        return x
    if input_norm == "caffe-bgr":
        x = x.flip(1) * 255
    mean, std = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                 for v in NORMALIZATIONS[input_norm])
    return (x - mean) / std


def map_labels(label: torch.Tensor, num_classes: int, class_map: dict | None = None,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Dataset label ids -> segmenter classes; unmapped ids and ids >= num_classes -> ignore."""
    label = label.long()
    if label.dim() == 4:
        label = label[:, 0]
    if class_map is not None:
        lut = torch.full((max(int(label.max()) + 1, max(class_map) + 1),), ignore_index, dtype=torch.long)
        for src, dst in class_map.items():
            lut[src] = dst
        label = lut.to(label.device)[label.clamp(min=0)]
    return torch.where((label >= 0) & (label < num_classes), label, torch.full_like(label, ignore_index))
