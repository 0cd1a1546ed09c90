"""Official SPADE/CLADE preprocessing: resize, crop and flip with one set of random parameters.

    pre = Preprocess("resize_and_crop", load_size=286, crop_size=256, flip=True)
    params = draw_params(pre, rng)                           # rng: np.random.Generator
    image = transform_image(pil_image, pre, params)          # [3, 256, 256] in [-1, 1]
    label = transform_map(label_array, pre, params)          # NEAREST, same pixels as PIL
    dist = transform_icpe(icpe_array, pre, params, "corrected")

Images are resized with PIL BICUBIC and label / instance maps with PIL NEAREST, as officially.
The ICPE map is computed on the full-size label and then resized / cropped / flipped:
``icpe_mode="official"`` does it as the official loader (``F.interpolate(mode='nearest')``,
whose pixel centres differ slightly from PIL's, and the vertical-flip quirk); ``"corrected"``
samples exactly the pixels of the label map and mirrors the map as the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data.icpe import MODES, flip_icpe

PREPROCESS_MODES = ("resize_and_crop", "fixed")


@dataclass(frozen=True)
class Preprocess:
    """Official preprocessing options (names as the official command line)."""

    preprocess_mode: str = "resize_and_crop"  # resize_and_crop (ADE20K, COCO) | fixed (Cityscapes)
    load_size: int = 286                      # square resize before the crop (resize_and_crop)
    crop_size: int = 256                      # output width (and height unless fixed)
    aspect_ratio: float = 1.0                 # width / height of the output (fixed)
    flip: bool = True                         # random horizontal flip with probability 1/2

    def __post_init__(self):
        if self.preprocess_mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocess_mode={self.preprocess_mode!r}; expected one of "
                             f"{list(PREPROCESS_MODES)}")
        if self.preprocess_mode == "resize_and_crop" and self.load_size < self.crop_size:
            raise ValueError(f"load_size={self.load_size} is smaller than crop_size={self.crop_size}; "
                             f"expected load_size >= crop_size (the official crop would pad with 0)")
        if self.crop_size < 1 or self.output_size[0] < 1:
            raise ValueError(f"crop_size={self.crop_size}, aspect_ratio={self.aspect_ratio} give an "
                             f"empty output; expected a positive size")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of every transformed map."""
        if self.preprocess_mode == "fixed":
            return round(self.crop_size / self.aspect_ratio), self.crop_size
        return self.crop_size, self.crop_size


@dataclass(frozen=True)
class TransformParams:
    """Random parameters shared by the image, label, instance and ICPE maps of one sample."""

    crop_pos: tuple[int, int]  # (x, y) of the crop's top-left corner in the resized image
    flip: bool                 # horizontal flip


def draw_params(pre: Preprocess, rng: np.random.Generator) -> TransformParams:
    """Crop position and flip as the official ``get_params`` (uniform, inclusive), from ``rng``."""
    slack = pre.load_size - pre.crop_size if pre.preprocess_mode == "resize_and_crop" else 0
    x, y = (int(v) for v in rng.integers(0, slack, size=2, endpoint=True))
    return TransformParams((x, y), bool(rng.random() > 0.5) and pre.flip)


def _resized_size(pre: Preprocess) -> tuple[int, int]:
    """(height, width) after the resize step, before the crop."""
    if pre.preprocess_mode == "fixed":
        return pre.output_size
    return pre.load_size, pre.load_size


@lru_cache(maxsize=64)
def nearest_indices(in_size: int, out_size: int, method: str) -> np.ndarray:
    """Source index of each output pixel of a 1-D nearest resize.

    ``method``: "pil" (``Image.NEAREST``, pixel centres) or "torch"
    (``F.interpolate(mode='nearest')``, the official ICPE resize).
    """
    if method == "pil":
        line = Image.fromarray(np.arange(in_size, dtype=np.int32)[None, :], mode="I")
        index = np.asarray(line.resize((out_size, 1), Image.NEAREST))[0]
    elif method == "torch":
        line = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size)
        index = F.interpolate(line, size=out_size, mode="nearest")[0, 0].numpy()
    else:
        raise ValueError(f"method={method!r}; expected 'pil' or 'torch'")
    index = index.astype(np.int64)
    index.setflags(write=False)
    return index


def _crop_indices(pre: Preprocess, params: TransformParams, shape: tuple[int, int], method: str):
    (in_h, in_w), (mid_h, mid_w) = shape, _resized_size(pre)
    out_h, out_w = pre.output_size
    x, y = params.crop_pos
    rows = nearest_indices(in_h, mid_h, method)[y:y + out_h]
    cols = nearest_indices(in_w, mid_w, method)[x:x + out_w]
    return rows, cols


def transform_map(array: np.ndarray, pre: Preprocess, params: TransformParams) -> np.ndarray:
    """Resize (PIL NEAREST), crop and flip an integer map [H, W] (label or instance ids)."""
    rows, cols = _crop_indices(pre, params, array.shape, "pil")
    out = array[rows[:, None], cols[None, :]]
    return out[:, ::-1] if params.flip else out


def transform_icpe(dist: np.ndarray, pre: Preprocess, params: TransformParams,
                   mode: str) -> torch.Tensor:
    """Resize / crop / flip an ICPE map [2, H, W] computed on the full-size raw label."""
    if mode not in MODES:
        raise ValueError(f"icpe_mode={mode!r}; expected one of {list(MODES)}")
    rows, cols = _crop_indices(pre, params, dist.shape[1:], "torch" if mode == "official" else "pil")
    out = dist[:, rows[:, None], cols[None, :]]
    if params.flip:
        out = flip_icpe(out, mode=mode)
    return torch.from_numpy(np.ascontiguousarray(out))


def transform_image(image: Image.Image, pre: Preprocess, params: TransformParams) -> torch.Tensor:
    """Resize (PIL BICUBIC), crop, flip an RGB image -> float32 [3, H, W] in [-1, 1]."""
    mid_h, mid_w = _resized_size(pre)
    out_h, out_w = pre.output_size
    image = image.resize((mid_w, mid_h), Image.BICUBIC)
    x, y = params.crop_pos
    image = image.crop((x, y, x + out_w, y + out_h))
    if params.flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    # The float32 operations of torchvision ToTensor + Normalize(0.5, 0.5), in numpy: torch's
    # intra-op threads only slow such small per-sample work down.
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray((array - np.float32(0.5)) / np.float32(0.5)))
