"""FID as the CLADE / SPADE papers compute it ("official"), next to the toolkit's own protocol.

    python run_analysis.py eval --checkpoints DIR --preset ade20k --dataroot ADE \\
        --fid-protocol official --fid-train-stats CLADE/datasets/train_mu_si

- ``toolkit`` (default): generated val images against the real val images of the same label
  maps, both at the generator's output size (pytorch-fid's bilinear resize to 299).
- ``official``: generated val images, saved as 8-bit images at the official size (256x256;
  Cityscapes 512x256, width x height), against statistics of the *training* set: read from
  the official ``datasets/train_mu_si/<dataset>/m.npy, s.npy`` files (pytorch-fid InceptionV3
  pool3 mean and covariance), or computed once from the training images at the same size and
  cached under ``<out>/cache/fid``.

The official files store no image count; the training-set size stands in for it
(:data:`OFFICIAL_TRAIN_IMAGES`), which only feeds the few-samples warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from data.datasets import build_dataset

from analysis.quality import metrics

log = logging.getLogger(__name__)

# (height, width) the official test scripts save images at (load_size / crop of the val options).
OFFICIAL_SIZES = {"ade20k": (256, 256), "ade20k-outdoor": (256, 256), "coco-stuff": (256, 256),
                  "cityscapes": (256, 512)}
# Folder names under the official datasets/train_mu_si/.
OFFICIAL_STATS_NAMES = {"ade20k": "ade20k", "ade20k-outdoor": "ade20koutdoor", "coco-stuff": "coco",
                        "cityscapes": "cityscapes"}
# Training images of each dataset (the official statistics' sample size).
OFFICIAL_TRAIN_IMAGES = {"ade20k": 20210, "coco-stuff": 118287, "cityscapes": 2975}
OFFICIAL_RESIZE = "bicubic (antialiased) to the official size, rounded to 8 bits as a saved image"
FEATURE_DIMS = 2048


@dataclass
class OfficialReference:
    """What the eval stage needs for official-protocol FID: transform, statistics, provenance."""

    transform: Callable[[torch.Tensor], torch.Tensor]   # applied to every image set before Inception
    statistics: metrics.ActivationStats                 # training-set reference
    provenance: dict = field(default_factory=dict)      # recorded in the table's meta.json

    @property
    def note(self) -> str:
        return (f"FID follows the official protocol: {self.provenance['reference']}; generated images "
                f"{self.provenance['resize']}.")


def official_size(preset: str) -> tuple[int, int] | None:
    """(height, width) of the official evaluation images; None for non-official presets."""
    return OFFICIAL_SIZES.get(preset)


def official_resize(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Images in [-1, 1] as the official scripts feed them: resized to ``size`` (bicubic,
    antialiased; skipped when already there or ``size`` is None) and rounded to 8 bits."""
    x = images.float()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    uint8 = ((x.clamp(-1, 1) + 1) * 127.5).round()
    return uint8 / 127.5 - 1


def find_official_statistics(path: str | Path, preset: str) -> tuple[Path, Path]:
    """(m.npy, s.npy) under ``path``: the dataset's folder itself, the ``train_mu_si`` folder,
    or the official repository root (``datasets/train_mu_si/<dataset>/``)."""
    name = OFFICIAL_STATS_NAMES.get(preset, preset)
    path = Path(path)
    candidates = [path, path / name, path / "datasets" / "train_mu_si" / name]
    for folder in candidates:
        if (folder / "m.npy").is_file() and (folder / "s.npy").is_file():
            return folder / "m.npy", folder / "s.npy"
    raise FileNotFoundError(f"official FID statistics for preset {preset!r} not found: looked for m.npy and "
                            f"s.npy in {[str(c) for c in candidates]}; expected the official "
                            f"datasets/train_mu_si/{name}/ folder (or pass no --fid-train-stats to compute "
                            f"them from the training images)")


def load_official_statistics(m_path: str | Path, s_path: str | Path, count: int) -> metrics.ActivationStats:
    """ActivationStats holding the mean and covariance of the official ``m.npy`` / ``s.npy``."""
    mu, sigma = np.load(m_path).astype(np.float64), np.load(s_path).astype(np.float64)
    if mu.shape != (FEATURE_DIMS,) or sigma.shape != (FEATURE_DIMS, FEATURE_DIMS):
        raise ValueError(f"{m_path} / {s_path} hold shapes {mu.shape} / {sigma.shape}; expected "
                         f"({FEATURE_DIMS},) / ({FEATURE_DIMS}, {FEATURE_DIMS}) (pytorch-fid pool3 statistics)")
    stats = metrics.ActivationStats()
    stats.count, stats.sum = count, mu * count
    stats.outer = sigma * (count - 1) + count * np.outer(mu, mu)
    return stats


def train_image_batches(preset: str, dataroot, *, size: tuple[int, int], count: int | None, batch_size: int,
                        seed: int = 0, make_dataset: Callable | None = None) -> Iterator[torch.Tensor]:
    """Whole training images (resized, not cropped or flipped) in batches, [-1, 1].

    ``make_dataset(phase, **options)``, when given, builds the dataset instead of
    ``build_dataset(preset, dataroot, phase, **options)`` (run_analysis passes ``RunContext.dataset``,
    which applies --skip-invalid and counts the samples left out)."""
    options = dict(crop_size=size[1], load_size=size[1], flip=False, seed=seed, max_samples=count)
    dataset = (make_dataset("train", **options) if make_dataset is not None
               else build_dataset(preset, dataroot, "train", **options))
    total = len(dataset) if count is None else min(count, len(dataset))
    for start in range(0, total, batch_size):
        yield torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, total))])


def official_reference(preset: str, inception, *, device, cache_dir: str | Path, image_size: tuple[int, int],
                       stats_path: str | Path | None = None, dataroot=None, train_images: int | None = None,
                       batch_size: int = 16, seed: int = 0, dataset: str = "",
                       make_dataset: Callable | None = None) -> OfficialReference:
    """The official protocol's transform and training-set statistics for ``preset``.

    ``stats_path`` given: the official m.npy / s.npy. Otherwise the statistics of the training
    split (``train_images`` of it, None = all) through ``inception``, cached in ``cache_dir``.
    ``image_size`` is the generated images' (height, width), used where there is no official size.
    ``dataset`` describes the training images in the provenance (and so in the cache's identity);
    ``make_dataset`` as in :func:`train_image_batches`.
    """
    size = official_size(preset)
    resize = (f"{OFFICIAL_RESIZE} ({size[1]}x{size[0]})" if size else
              f"rounded to 8 bits at their own size {image_size[1]}x{image_size[0]} (preset {preset!r} has "
              f"no official size)")

    def transform(images):
        return official_resize(images, size)

    if stats_path is not None:
        m_path, s_path = find_official_statistics(stats_path, preset)
        count = OFFICIAL_TRAIN_IMAGES.get(preset, metrics.FID_MIN_SAMPLES)
        statistics = load_official_statistics(m_path, s_path, count)
        reference = f"official training-set statistics {m_path.parent} (m.npy, s.npy)"
        log.info("FID reference: %s", reference)
    else:
        size_hw = size or tuple(image_size)
        provenance = dict(protocol="official", split="train", count=train_images or "all", preset=preset,
                          dataset=dataset, image_size=list(size_hw), resize=OFFICIAL_RESIZE,
                          extractor=f"pytorch-fid InceptionV3 pool3 (2048-d), {metrics.FID_WEIGHTS_FILE}")

        def compute():
            batches = train_image_batches(preset, dataroot, size=size_hw, count=train_images,
                                          batch_size=batch_size, seed=seed, make_dataset=make_dataset)
            return metrics.activation_statistics(batches, inception, device, transform)

        statistics = metrics.cached_reference_statistics(cache_dir, compute, **provenance)
        reference = (f"training-set statistics computed from {statistics.count} training images "
                     f"({dataset or preset}), cached in {cache_dir}")
    return OfficialReference(transform, statistics, dict(protocol="official", reference=reference, resize=resize))


def toolkit_provenance() -> dict:
    """Provenance of the default protocol, for the table's meta.json."""
    return dict(protocol="toolkit", reference="real val images of the same label maps, at the output size",
                resize=metrics.FID_RESIZE)
