"""How often the window SPADE's modulation sees holds a single class, at each generator resolution.

    sizes = [(8, 8), (16, 16), (32, 32), (64, 64), (128, 128), (256, 256)]   # ade20k, 'normal'
    single_class_fraction(label, sizes)                   # label [N, 1, H, W] or [N, H, W] class ids
    single_class_fraction(batch["label"] for batch in loader, sizes)          # pooled over batches

Why: SPADE computes gamma / beta with two stacked 3x3 convolutions of the one-hot label map
(``mlp_shared``, then ``mlp_gamma`` / ``mlp_beta``), resized (nearest) to each layer's
resolution, so one gamma value depends on the 5x5 window around its pixel
(:func:`stacked_window`). Where that window holds one class, the value depends on that class
only, exactly like CLADE's per-class table; only pixels near a class boundary can get anything
spatial. This fraction is therefore the share of each layer's pixels at which SPADE *cannot* be
more than class-adaptive (``kernel``: another window, e.g. 1 for a 1x1 SPADE).

Definitions: the label map is nearest-resized to each size as the generator's norm layers do
(``F.interpolate(mode="nearest")`` on the class-index map). A pixel counts as single-class when
the largest and the smallest class id in its kxk window are equal (max-pool == -max-pool of the
negated map; one pass per size, no loop over classes). At the image border the window is cut to
the pixels inside the image (max-pooling pads with -inf), i.e. only real neighbours count.
``sizes`` is an argument so that ``data`` does not import ``models``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F


def stacked_window(kernel: int, convs: int = 2) -> int:
    """Input window seen by ``convs`` stacked kxk stride-1 convolutions: ``convs * (k - 1) + 1``."""
    if kernel < 1 or convs < 1:
        raise ValueError(f"stacked_window: kernel={kernel}, convs={convs}; expected positive integers")
    return convs * (kernel - 1) + 1


SPADE_WINDOW = stacked_window(3)   # SPADE's 3x3 mlp_shared, then its 3x3 mlp_gamma / mlp_beta: 5


def _size(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size {size!r}: expected positive (height, width) or an int")
    return int(h), int(w)


def _index_map(labels: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] float class ids (exact up to 2^24) from [N, H, W] or [N, 1, H, W]."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"label map has dtype {labels.dtype}; expected integer class ids "
                         "(a one-hot map: take .argmax(1) first)")
    if labels.dim() == 3:
        labels = labels[:, None]
    if labels.dim() != 4 or labels.shape[1] != 1:
        raise ValueError(f"label map has shape {tuple(labels.shape)}; expected [N, H, W] or [N, 1, H, W]")
    return labels.float()


def single_class_mask(labels: torch.Tensor, size, *, kernel: int = SPADE_WINDOW) -> torch.Tensor:
    """Bool [N, h, w]: the label map resized to ``size``, True where the kxk window holds one class."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel={kernel}; expected an odd window size >= 1")
    index = F.interpolate(_index_map(labels), size=_size(size), mode="nearest")
    pad = kernel // 2
    highest = F.max_pool2d(index, kernel, stride=1, padding=pad)
    lowest = -F.max_pool2d(-index, kernel, stride=1, padding=pad)
    return (highest == lowest)[:, 0]


def single_class_fraction(labels: torch.Tensor | Iterable[torch.Tensor], sizes: Sequence, *,
                          kernel: int = SPADE_WINDOW) -> pd.DataFrame:
    """Fraction of pixels whose kxk window holds a single class, per resolution.

    ``labels``: one tensor of class ids or an iterable of them (batches of any size; pooled by
    pixel count). Columns: ``resolution`` ('HxW'), ``height``, ``width``, ``kernel``,
    ``single_class_fraction``, ``pixels`` (pixels counted at that resolution), ``images``.
    """
    batches = [labels] if torch.is_tensor(labels) else labels
    shapes = [_size(s) for s in sizes]
    if not shapes:
        raise ValueError("single_class_fraction: sizes is empty; pass the generator's resolutions")
    single = dict.fromkeys(shapes, 0)
    images = 0
    for batch in batches:
        for shape in shapes:
            single[shape] += int(single_class_mask(batch, shape, kernel=kernel).sum())
        images += len(batch)
    if images == 0:
        raise ValueError("single_class_fraction: got no label maps")
    return pd.DataFrame([{"resolution": f"{h}x{w}", "height": h, "width": w, "kernel": kernel,
                          "single_class_fraction": single[(h, w)] / (images * h * w),
                          "pixels": images * h * w, "images": images} for h, w in shapes])


def coarsen_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Integer label (or instance) map [..., H, W] made ``factor`` times coarser and
    nearest-upsampled back to H x W (the input-mask resolution experiment); factor 1 returns it."""
    if factor < 1 or labels.shape[-1] % factor or labels.shape[-2] % factor:
        raise ValueError(f"coarsen_labels: factor={factor} must be >= 1 and divide the map size "
                         f"{tuple(labels.shape[-2:])}")
    if factor == 1:
        return labels
    if labels.dtype.is_floating_point:
        raise ValueError(f"coarsen_labels: dtype {labels.dtype}; expected integer ids")
    h, w = labels.shape[-2:]
    flat = labels.reshape(-1, 1, h, w).float()
    coarse = F.interpolate(flat, size=(h // factor, w // factor), mode="nearest")
    return F.interpolate(coarse, size=(h, w), mode="nearest").to(labels.dtype).reshape(labels.shape)
