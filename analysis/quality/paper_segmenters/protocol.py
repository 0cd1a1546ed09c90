"""Each published segmenter with its own evaluation protocol, as its reference code evaluates.

- DRN-D-105 (fyu/drn ``segment.py test``): RGB normalised with the Cityscapes mean / std of
  DRN's ``info.json``; the image as given, single scale (``--ms`` off); scores upsampled by the
  network's own transposed conv; Cityscapes label ids -> 19 train ids.
- UPerNet-101 (``eval.py``, config ``ade20k-resnet101-upernet``): RGB, ImageNet mean / std; short
  side 300, 375, 450, 525, 600 (long side <= 1000, sides rounded up to multiples of 32); softmax
  upsampled to the image size and averaged over the sizes; ADE ids 1..150 = our 0..149.
- DeepLabV2 (deeplab-pytorch ``main.py test``): BGR in [0, 255] minus the Caffe mean; the image as
  given (no resize); MSC: max of the logits at scales 1, 0.5, 0.75; COCO-Stuff ids 0..181, 255
  ignored.

The papers do not publish the test resolution of their generated images: the default is the
generated size (SPADE / CLADE: Cityscapes 512x256, COCO-Stuff 256x256), as each reference test
feeds an image at its own size; ``test_size`` resizes DRN's and DeepLabV2's input instead, and
``img_sizes`` replaces UPerNet's short sides. Scores come back at the image size (bilinear; DRN:
its own transposed-conv upsampling), so ``argmax`` is the reference's prediction.

    seg = load_paper_segmenter("deeplabv2", "deeplabv2_resnet101_msc-cocostuff164k-100000.pth")
    scores = seg(images)                          # [N, 182, H, W] from images in [-1, 1]
    meter.update(scores, seg.target(label, scores.shape[1]))
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from analysis.quality.paper_segmenters.release import load_released_network
from analysis.quality.segmenter_io import CLASS_MAPS, NORMALIZATIONS, map_labels, normalize
from analysis.quality.segmenter_names import (DISPLAY_NAMES, PAPER_SEGMENTER_NAMES, PRECISIONS, RELEASED_FILES,
                                             UPERNET_IMG_SIZES)

UPERNET_MAX_SIZE = 1000                          # DATASET.imgMaxSize
UPERNET_PADDING = 32                             # DATASET.padding_constant


@dataclass(frozen=True)
class Protocol:
    """How one published network is evaluated; ``record()`` goes into evaluation.meta.json."""

    display: str           # short name for the tables
    dataset: str
    num_classes: int
    class_map: str         # key of CLASS_MAPS
    labels: str            # the label mapping in words
    input_norm: str        # key of NORMALIZATIONS
    reference: str         # repository, commit and the evaluation code followed
    resolution: str        # test resolution and resizing, in words
    multi_scale: str
    unpublished: tuple[str, ...] = field(default=())   # choices the papers do not state (reference default used)
    differences: tuple[str, ...] = field(default=())   # where the toolkit's scoring departs from the reference code


PROTOCOLS = {
    "drn-d-105": Protocol(
        display=DISPLAY_NAMES["drn-d-105"], dataset="Cityscapes", num_classes=19, class_map="cityscapes-train-ids",
        labels="Cityscapes label ids -> 19 train ids (cityscapesScripts); other ids ignored",
        input_norm="cityscapes-drn", reference="github.com/fyu/drn d75db2e, segment.py test (single scale)",
        resolution="the image as given (--segmenter-size resizes it, bilinear); scores upsampled x8 by the "
                   "network's fixed transposed conv ('up')",
        multi_scale="none (segment.py --ms off by default)",
        unpublished=("test resolution of the generated images (default: as generated)",
                     "single-scale test (segment.py's default; --ms not used)")),
    "upernet-101": Protocol(
        display=DISPLAY_NAMES["upernet-101"], dataset="ADE20K", num_classes=150, class_map="identity",
        labels="ADE20K ids 1..150 = the toolkit's 0..149; 'other' (0) ignored",
        input_norm="imagenet",
        reference="github.com/CSAILVision/semantic-segmentation-pytorch 8f27c9b, eval.py with "
                  "config/ade20k-resnet101-upernet.yaml",
        resolution=f"for each short side s: scale = min(s / short side, {UPERNET_MAX_SIZE} / long side), sides "
                   f"rounded up to multiples of {UPERNET_PADDING}, bilinear resize; softmax upsampled to the "
                   f"image size (bilinear)",
        multi_scale="softmax averaged over the short sides (--segmenter-img-sizes)",
        unpublished=("short sides of the multi-scale test (default: the config's imgSizes)",),
        differences=("mIoU averages the classes present in the labels or the predictions; eval.py averages all "
                     "150 (an absent class counts 0): equal on the full val set, where every class occurs",
                     "the float image is resized (bilinear, antialiased when shrinking, like PIL), not an 8-bit "
                     "PIL image")),
    "deeplabv2": Protocol(
        display=DISPLAY_NAMES["deeplabv2"], dataset="COCO-Stuff", num_classes=182, class_map="identity",
        labels="COCO-Stuff ids 0..181; 255 (unlabelled) and the toolkit's dontcare id 182 ignored",
        input_norm="caffe-bgr", reference="github.com/kazuto1011/deeplab-pytorch 4219467, main.py test "
                                          "(configs/cocostuff164k.yaml)",
        resolution="the image as given (the COCO-Stuff 164k test does not resize; --segmenter-size resizes "
                   "it, bilinear); logits upsampled to the image size (bilinear)",
        multi_scale="MSC: pixel-wise max of the logits at scales 1, 0.5, 0.75",
        unpublished=("test resolution of the generated images (default: as generated)",)),
}


def _resize(x: torch.Tensor, size, antialias: bool = False) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)


def upernet_input_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``ValDataset``'s resize target for one short side: scaled, capped, rounded up to multiples of 32."""
    scale = min(short_side / min(height, width), UPERNET_MAX_SIZE / max(height, width))

    def round_up(x: int) -> int:
        return ((x - 1) // UPERNET_PADDING + 1) * UPERNET_PADDING

    return round_up(int(height * scale)), round_up(int(width * scale))


class PaperSegmenter(nn.Module):
    """A published network with its protocol: images in [-1, 1] -> scores [N, C, H, W] whose argmax is
    the reference's prediction (DRN: logits; UPerNet: mean softmax; DeepLabV2: MSC logits).

    ``network`` is the bare network (``network.logits(x)``: the reference's logits before upsampling).
    """

    is_proxy = False

    def __init__(self, name: str, network: nn.Module, *, weights: str = "", test_size: tuple[int, int] | None = None,
                 img_sizes: tuple[int, ...] = UPERNET_IMG_SIZES, precision: str = "fp32", channels_last: bool = False):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"segmenter precision {precision!r}; expected one of {PRECISIONS}")
        if test_size is not None and name == "upernet-101":
            raise ValueError("--segmenter-size applies to drn-d-105 and deeplabv2; UPerNet-101 tests at the short "
                             "sides of --segmenter-img-sizes")
        if name == "upernet-101" and (not img_sizes or min(img_sizes) < 1):
            raise ValueError(f"UPerNet-101 short sides {img_sizes!r}: expected one or more sizes >= 1")
        self.name = self.kind = name
        self.protocol, self.network = PROTOCOLS[name], network
        self.weights, self.test_size, self.img_sizes = weights, test_size, tuple(img_sizes)
        self.precision, self.channels_last = precision, channels_last
        self.class_map = CLASS_MAPS[self.protocol.class_map]
        self.sizes_seen: set[tuple[int, int]] = set()
        self.seconds, self.images_scored = 0.0, 0   # wall-clock time of forward calls, for the stage record
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    @property
    def description(self) -> str:
        """What the tables' ``segmenter`` column says, e.g. 'DRN-D-105, released weights, single scale 512x256'."""
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(self.sizes_seen)) or "the image size"
        if self.name == "upernet-101":
            how = f"{len(self.img_sizes)} scales (short side {', '.join(map(str, self.img_sizes))}) of {sizes}"
        else:
            tested = f"{self.test_size[1]}x{self.test_size[0]}" if self.test_size else sizes
            how = ("MSC (scales 1, 0.5, 0.75) at " if self.name == "deeplabv2" else "single scale ") + tested
        extra = f", {self.precision}" if self.precision != "fp32" else ""
        return f"{self.protocol.display}, released weights, {how}{extra}"

    def record(self) -> dict:
        """The protocol as run, for evaluation.meta.json."""
        mean, std = NORMALIZATIONS[self.protocol.input_norm]
        return {"segmenter": self.name, "description": self.description, "weights": self.weights,
                **asdict(self.protocol), "unpublished": list(self.protocol.unpublished),
                "differences": list(self.protocol.differences),
                "normalization": {"name": self.protocol.input_norm, "mean": list(mean), "std": list(std),
                                  "channels": "BGR in [0, 255]" if self.protocol.input_norm == "caffe-bgr"
                                  else "RGB in [0, 1]"},
                "test_size": list(self.test_size) if self.test_size else "as generated",
                "img_sizes": list(self.img_sizes) if self.name == "upernet-101" else None,
                "precision": self.precision, "channels_last": self.channels_last}

    def _run(self, x: torch.Tensor, call) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            return call(x).float()

    @property
    def seconds_per_image(self) -> float | None:
        """Mean wall-clock seconds per scored image so far (None before the first call)."""
        return self.seconds / self.images_scored if self.images_scored else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        scores = self._scores(images)
        if scores.is_cuda:
            torch.cuda.synchronize(scores.device)
        self.seconds += time.perf_counter() - start
        self.images_scored += len(images)
        return scores

    @torch.no_grad()
    def _scores(self, images: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        self.sizes_seen.add(size)
        x = normalize(images.float(), self.protocol.input_norm)
        if self.name == "upernet-101":
            scores = 0
            for short in self.img_sizes:
                scaled = _resize(x, upernet_input_size(*size, short), antialias=True)
                logits = self._run(scaled, self.network.logits)
                scores = scores + F.softmax(_resize(logits, size), dim=1) / len(self.img_sizes)
            return scores
        if self.test_size is not None:
            x = _resize(x, self.test_size, antialias=True)
        if self.name == "drn-d-105":
            scores = self._run(x, self.network)[..., :x.shape[-2], :x.shape[-1]]   # 'up' gives 8 * ceil(side / 8)
        else:
            scores = self._run(x, self.network.logits)
        return _resize(scores, size)

    def target(self, label: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """Dataset label map [N, (1,) H, W] -> this network's class ids [N, H, W] (ignored: 255)."""
        return map_labels(label, num_classes or self.protocol.num_classes, self.class_map)


def load_paper_segmenter(name: str, path: str | Path, device="cpu", **protocol_options) -> PaperSegmenter:
    """A published segmenter (one of PAPER_SEGMENTER_NAMES) from its released weights at ``path``.

        seg = load_paper_segmenter("upernet-101", "ade20k-resnet101-upernet/", device="cuda")

    ``protocol_options``: ``test_size`` (H, W), ``img_sizes``, ``precision``, ``channels_last``
    (see PaperSegmenter). A file of another network, or with missing / unexpected / mis-shaped
    keys, raises SegmenterWeightsError naming the file, the keys and the file expected.
    """
    if name not in PAPER_SEGMENTER_NAMES:
        raise ValueError(f"unknown paper segmenter {name!r}; expected one of {PAPER_SEGMENTER_NAMES} "
                         f"(weights: {'; '.join(f'{n}: {f}' for n, f in RELEASED_FILES.items())})")
    network = load_released_network(name, path, device)
    return PaperSegmenter(name, network, weights=str(path), **protocol_options)
