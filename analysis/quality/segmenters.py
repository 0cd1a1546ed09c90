"""Segmentation scores of generated images: segmenters, class mappings, mIoU and accuracy.

A *segmenter* maps an image batch [N, 3, H, W] in [-1, 1] to class logits [N, C, H, W] and
knows how to express the dataset's label map in its own classes (``target``):

    seg = load_torchscript_segmenter("drn_d_105_cityscapes.pt", class_map="cityscapes-train-ids")
    meter = SegmentationMeter()
    logits = seg(images)
    meter.update(logits, seg.target(label, logits.shape[1]))
    meter.scores()   # {'miou': ..., 'accuracy': ..., 'iou_per_class': [...], 'pixels': ...}

The papers score generated images with pretrained segmenters (see ``PAPER_SEGMENTERS``);
``load_paper_segmenter(name, released_weights)`` builds each one with its own evaluation protocol
(``analysis/quality/paper_segmenters``). Without one, ``train_proxy_segmenter`` trains a small
network on the real images of the dataset in use; its numbers are *proxy* scores, comparable
between methods of one run, not with the papers.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from analysis.quality.paper_segmenters.protocol import PaperSegmenter, load_paper_segmenter  # noqa: F401 (API)
from analysis.quality.segmenter_io import (CITYSCAPES_LABEL_TO_TRAIN_ID, CLASS_MAPS, IGNORE_INDEX,  # noqa: F401
                                          INPUT_NORMS, map_labels, normalize)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterSpec:
    """What the papers used on one dataset, and the TorchScript file the toolkit expects."""

    network: str       # architecture and where the weights come from
    classes: str       # what the output channels mean
    class_map: str     # key of CLASS_MAPS turning our label ids into the output channels
    input_norm: str    # one of INPUT_NORMS
    file: str          # suggested TorchScript file name (pass it with --segmenter)


PAPER_SEGMENTERS = {
    "cityscapes": SegmenterSpec(
        network="DRN-D-105 (github.com/fyu/drn, drn_d_105 DRNSeg with the Cityscapes weights)",
        classes="19 Cityscapes train ids (road ... bicycle)",
        class_map="cityscapes-train-ids", input_norm="cityscapes-drn", file="drn_d_105_cityscapes.pt"),
    "ade20k": SegmenterSpec(
        network="UperNet-101 (github.com/CSAILVision/semantic-segmentation-pytorch, "
                "resnet101 encoder + upernet decoder)",
        classes="150 ADE20K classes; our ids 0..149 are ADE ids 1..150 (0 'other' is dontcare)",
        class_map="identity", input_norm="imagenet", file="upernet101_ade20k.pt"),
    "coco-stuff": SegmenterSpec(
        network="DeepLabV2 ResNet-101 (github.com/kazuto1011/deeplab-pytorch, cocostuff164k weights)",
        classes="182 COCO-Stuff ids 0..181 (things + stuff, unused ids included); 255 is dontcare",
        class_map="identity", input_norm="caffe-bgr", file="deeplabv2_cocostuff.pt"),
}
PAPER_SEGMENTERS["ade20k-outdoor"] = PAPER_SEGMENTERS["ade20k"]

TORCHSCRIPT_CONTRACT = """\
Expected file: a TorchScript module (torch.jit.script or torch.jit.trace, saved with
torch.jit.save) taking a float tensor [N, 3, H, W] normalised as its `input_norm` says
('imagenet': RGB in [0, 1] minus ImageNet mean over std; 'cityscapes-drn': the same with the
Cityscapes mean / std of fyu/drn's info.json; 'caffe-bgr': BGR in [0, 255] minus the Caffe mean;
'zero-one'; 'minus-one-one') and returning logits [N, C, h, w] (or a tuple /
dict whose first / 'out' entry is that); logits are resized bilinearly to H x W. The class map
turns the dataset's label ids into the C output channels; ids it does not list (dontcare,
void classes) are not scored."""


class Segmenter(Protocol):
    """What scoring needs from a segmenter (TorchScriptSegmenter and ProxySegmenter are two)."""

    description: str   # goes into the tables' 'segmenter' column
    is_proxy: bool     # True: its scores are labelled *_proxy
    kind: str          # 'proxy', 'torchscript' or the paper network's name (segmenter_names.PAPER_SEGMENTER_NAMES)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> class logits [N, C, H, W]."""

    def target(self, label: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Dataset label ids [N, (1,) H, W] -> its class ids [N, H, W], IGNORE_INDEX where unscored."""


def resolve_class_map(class_map) -> dict | None:
    """None, a dict {label id: segmenter class}, a CLASS_MAPS name or a JSON file of such a dict."""
    if class_map is None or isinstance(class_map, dict):
        return class_map
    if class_map in CLASS_MAPS:
        return CLASS_MAPS[class_map]
    path = Path(class_map)
    if not path.is_file():
        raise ValueError(f"class map {class_map!r} is neither one of {sorted(CLASS_MAPS)} nor a JSON file "
                         f"of {{\"label id\": segmenter class}}")
    return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}


class TorchScriptSegmenter(nn.Module):
    """A user-provided segmenter: images in [-1, 1] -> logits [N, C, H, W] at the image size."""

    is_proxy = False
    kind = "torchscript"

    def __init__(self, module: nn.Module, class_map: dict | None = None, input_norm: str = "imagenet",
                 description: str = "user segmenter"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm={input_norm!r}; expected one of {INPUT_NORMS}")
        self.module, self.class_map, self.input_norm = module, class_map, input_norm
        self.description = description

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.module(normalize(images, self.input_norm))
        if isinstance(out, dict):
            out = out["out"] if "out" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() != 4 or out.shape[0] != images.shape[0]:
            raise ValueError(f"segmenter returned shape {tuple(out.shape)}; expected logits "
                             f"[{images.shape[0]}, C, h, w]\n{TORCHSCRIPT_CONTRACT}")
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def target(self, label: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Dataset label map [N, (1,) H, W] -> target ids of this segmenter (ignore = 255)."""
        return map_labels(label, num_classes, self.class_map)


def load_torchscript_segmenter(path: str | Path, class_map=None, input_norm: str = "imagenet",
                               device="cpu") -> TorchScriptSegmenter:
    """Load a TorchScript segmenter; ``class_map``: see ``resolve_class_map``.

        seg = load_torchscript_segmenter("upernet101_ade20k.pt")   # identity map, ImageNet input
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter {str(path)!r} does not exist.\n{TORCHSCRIPT_CONTRACT}\n"
                                + "\n".join(f"  {k}: {s.network} -> {s.file}" for k, s in PAPER_SEGMENTERS.items()))
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a TorchScript module ({exc}).\n{TORCHSCRIPT_CONTRACT}") from exc
    module.eval()
    return TorchScriptSegmenter(module, resolve_class_map(class_map), input_norm,
                                description=f"{path.name} (user segmenter, {input_norm} input)")


# --- the proxy segmenter ------------------------------------------------------------------

def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: a few hundred steps leave BatchNorm's running stats unreliable.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class ProxySegmenter(nn.Module):
    """Small U-shaped conv net (~55k params) for 64x64-ish images, cheap to train on a CPU.

    Full resolution only in the first conv and the 1x1 head; the 3x3 work happens at 1/2 and
    1/4 resolution. ``forward(images)`` -> logits [N, num_classes, H, W]; ``features(images)``
    -> [N, 2 * width], the global average of the penultimate (head) activations: the offline
    stand-in for Inception features.
    """

    is_proxy = True
    kind = "proxy"

    def __init__(self, num_classes: int, width: int = 16, description: str = "proxy (untrained)"):
        super().__init__()
        w = width
        self.enc1 = _conv(3, w)
        self.enc2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_conv(2 * w, 2 * w, stride=2), _conv(2 * w, 2 * w, dilation=2))
        self.dec2 = _conv(4 * w, 2 * w)
        self.head = nn.Sequential(nn.Conv2d(3 * w, 2 * w, 1, bias=False), nn.GroupNorm(4, 2 * w),
                                  nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(2 * w, num_classes, 1)
        self.num_classes = num_classes
        self.description = description

    def penultimate(self, images: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(images)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="nearest"), e2], 1))
        return self.head(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.penultimate(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.penultimate(images).mean((2, 3))

    def target(self, label: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """Dataset label map -> targets; the dontcare id (= num_classes) is ignored."""
        return map_labels(label, num_classes or self.num_classes)


def _learning_rate(step: int, total: int, peak: float) -> float:
    # Linear warm-up over 10% of the steps, then cosine decay to 0 at ``total``.
    warm = max(1, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def train_proxy_segmenter(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 200,
                          batch_size: int = 16, lr: float = 3e-3, width: int = 16, seed: int = 0,
                          device="cpu", max_seconds: float | None = None, progress: bool = True) -> ProxySegmenter:
    """Train a ProxySegmenter on real ``images`` [N, 3, H, W] in [-1, 1] and ``labels`` [N, (1,) H, W].

    Label ids >= ``num_classes`` (dontcare) are ignored; augmentation: horizontal flips.
    ``max_seconds``: after 6 steps the step count is cut (and the schedule shortened) so that
    training fits, but never below ``steps // 4``; the description says how many steps ran.
    Returns the network in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ProxySegmenter(num_classes, width).to(device)
    targets = map_labels(labels, num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    total, start = steps, time.perf_counter()
    bar = tqdm(total=steps, desc="proxy segmenter", disable=not progress, leave=False, mininterval=1)
    step = 0
    while step < total:
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
        x, y = images[idx].to(device), targets[idx].to(device)
        flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
        for group in opt.param_groups:
            group["lr"] = _learning_rate(step, total, lr)
        loss = F.cross_entropy(net(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step == 1:
            first_done = time.perf_counter()   # the first step pays one-off allocation costs
        if step == 6 and max_seconds is not None:
            per_step = (time.perf_counter() - first_done) / 5
            affordable = step + int((max_seconds - (time.perf_counter() - start)) / per_step)
            if affordable < total:   # never below a quarter of the planned steps
                total = max(step + 1, steps // 4, affordable)
                log.warning("proxy segmenter: running %d of %d steps to fit about %.0f s on this machine",
                            total, steps, max_seconds)
                bar.total = total
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    net.eval()
    net.description = f"proxy (trained by the toolkit on {len(images)} real images, {step} steps)"
    log.info("%s in %.1f s: last batch loss %.3f", net.description, time.perf_counter() - start, loss.item())
    return net


# --- scores -------------------------------------------------------------------------------

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """[num_classes, num_classes] counts, rows = target class, columns = predicted class.

    Pixels whose target is ``ignore_index`` are skipped; other targets must be in range.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target ids {sorted(set(target[(target < 0) | (target >= num_classes)].tolist()))[:10]} "
                         f"outside [0, {num_classes - 1}] and not the ignore index {ignore_index}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes).cpu()


def segmentation_scores(cm: torch.Tensor | np.ndarray) -> dict:
    """mIoU (mean over classes present in target or prediction) and pixel accuracy."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    total = cm.sum()
    return {"miou": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
            "accuracy": float(tp.sum() / total) if total else float("nan"),
            "iou_per_class": iou.tolist(), "pixels": int(total)}


class SegmentationMeter:
    """Accumulates a confusion matrix over batches of logits and targets.

        meter.update(logits, target); meter.scores()
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        self.cm = None

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        cm = confusion_matrix(logits.argmax(1), target, logits.shape[1], self.ignore_index)
        self.cm = cm if self.cm is None else self.cm + cm

    def scores(self) -> dict:
        if self.cm is None:
            raise ValueError("no batches were scored")
        return segmentation_scores(self.cm)
