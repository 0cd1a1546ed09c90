"""Frechet distances between image sets: FID with pytorch-fid's Inception, or any extractor.

    stats = activation_statistics(image_batches, load_fid_inception())   # streaming, float64
    fid = frechet_distance(*stats.mean_cov(), *reference.mean_cov())

The Inception weights (``pt_inception-2015-12-05-6726825d.pth``, the TensorFlow FID graph
ported by pytorch-fid) are never downloaded here: they are read from the torch hub cache or
a given path (``find_inception_weights``). Without them the toolkit reports a Frechet
distance on the proxy segmenter's features instead (``fd_proxy_features``, never "FID").
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from fileio import WeightsFileError, atomic_path, load_weights, write_json_atomic


log = logging.getLogger(__name__)

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)
FID_MIN_SAMPLES = 2048  # below this the covariance of 2048-d features is rank-deficient
FID_RESIZE = "bilinear to 299x299 (pytorch-fid, align_corners=False)"
CLEAN_RESIZE = "PIL bicubic per channel to 299x299 on uint8 images (clean-fid 'clean')"


class InceptionWeightsMissing(FileNotFoundError):
    """The FID Inception weights file is not where we looked."""


def hub_weights_path() -> Path:
    """Where torch hub (and so pytorch-fid) caches the FID Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Path of the FID Inception weights: ``path`` if given, else the torch hub cache.

    Raises InceptionWeightsMissing naming the file, its URL and where to put it.
    """
    candidate = Path(path) if path is not None else hub_weights_path()
    if candidate.is_dir():
        candidate = candidate / FID_WEIGHTS_FILE
    if candidate.is_file():
        return candidate
    raise InceptionWeightsMissing(
        f"FID Inception weights {FID_WEIGHTS_FILE} not found at {str(candidate)!r}. Download "
        f"{FID_WEIGHTS_URL} and put it at {str(hub_weights_path())!r} (the torch hub cache) or "
        f"pass --inception-weights PATH. Without it the run reports fd_proxy_features instead of FID.")


def fid_inception_network() -> nn.Module:
    """pytorch-fid's FID Inception v3 architecture with untrained weights (no download)."""
    from pytorch_fid import inception as fid  # imported when FID is scored: it loads torchvision's models

    # Same construction as pytorch_fid.inception.fid_inception_v3, minus its download.
    net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] -> [N, 2048] pool3 features of pytorch-fid's InceptionV3.

    ``forward(images, resize=False)`` skips pytorch-fid's bilinear resize to 299x299, for
    images already resized (the clean-fid path, see ``clean_resize``).
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        i = inception
        # pytorch_fid.inception.InceptionV3's blocks 0-3 (input to pool3) in its order, built from
        # ``inception`` here because InceptionV3.__init__ downloads weights of its own.
        self.net = nn.Sequential(
            i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e,
            i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        ).eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor, resize: bool = True) -> torch.Tensor:
        if resize:  # pytorch-fid's resize_input
            images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(images).flatten(1)


def load_fid_inception(weights: str | Path | None = None, device="cpu") -> InceptionFeatures:
    """FID feature extractor with the weights from ``find_inception_weights(weights)``."""
    path = find_inception_weights(weights)
    expected = (f"expected pytorch-fid's FID Inception state_dict {FID_WEIGHTS_FILE} (about 92 MB, from "
                f"{FID_WEIGHTS_URL}); download it again or pass another --inception-weights")
    state = load_weights(path, what="FID Inception weights", expected=expected)
    net = fid_inception_network()
    if not isinstance(state, dict) or set(state) != set(net.state_dict()):
        found = sorted(state)[:3] if isinstance(state, dict) else type(state).__name__
        raise WeightsFileError(f"FID Inception weights {str(path)!r} hold {found}, not the keys of the FID "
                               f"Inception network ('Conv2d_1a_3x3.conv.weight', ...); {expected}")
    net.load_state_dict(state)
    return InceptionFeatures(net).to(device)


def cleanfid_available() -> bool:
    """True when the optional ``cleanfid`` package is installed."""
    return importlib.util.find_spec("cleanfid") is not None


def clean_resize(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's 'clean' resize: [N, 3, H, W] in [-1, 1] -> [N, 3, 299, 299] in [-1, 1].

    Quantizes to uint8 first, as clean-fid does with saved images. Needs ``cleanfid``.
    """
    from cleanfid.resize import build_resizer  # optional dependency (fid_clean only)

    resize = build_resizer("clean")
    uint8 = ((images.detach().cpu().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    out = [resize(img.permute(1, 2, 0).numpy()) for img in uint8]   # HWC float32 in [0, 255]
    batch = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return (batch / 127.5 - 1).to(images.device)


class ActivationStats:
    """Streaming mean and covariance of feature vectors, with float64 running sums.

        stats = ActivationStats(); stats.update(features)   # [N, D], any number of calls
        mu, sigma = stats.mean_cov()                          # as np.mean / np.cov(rowvar=False)
    """

    def __init__(self, dims: int | None = None):
        self.count = 0
        self.sum = None if dims is None else np.zeros(dims)
        self.outer = None if dims is None else np.zeros((dims, dims))

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = features.detach().cpu().double().numpy() if torch.is_tensor(features) else np.asarray(features, np.float64)
        x = x.reshape(len(x), -1)
        if self.sum is None:
            self.sum, self.outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        if x.shape[1] != len(self.sum):
            raise ValueError(f"features have {x.shape[1]} dims; earlier batches had {len(self.sum)}")
        self.count += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    @property
    def dims(self) -> int:
        return 0 if self.sum is None else len(self.sum)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], unbiased covariance [D, D]) in float64; needs at least 2 samples."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        mu = self.sum / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma

    def save(self, path: str | Path, **provenance) -> Path:
        """Write ``path`` (.npz: mu, sigma, count) and ``path.json`` (provenance + count)."""
        path = Path(path)
        mu, sigma = self.mean_cov()
        with atomic_path(path) as tmp:
            np.savez(tmp, mu=mu, sigma=sigma, count=self.count)
        write_json_atomic(path.with_suffix(".json"), {"count": self.count, "dims": self.dims, **provenance})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ActivationStats":
        """Statistics saved by ``save`` (sums rebuilt from mean and covariance)."""
        data = np.load(path)
        stats, n = cls(), int(data["count"])
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
        stats.count, stats.sum = n, mu * n
        stats.outer = sigma * (n - 1) + n * np.outer(mu, mu)
        return stats


def activation_statistics(batches: Iterable[torch.Tensor], extractor: Callable, device="cpu",
                          transform: Callable | None = None) -> ActivationStats:
    """Feature statistics of image batches ([N, 3, H, W] in [-1, 1]) under ``extractor``."""
    stats = ActivationStats()
    with torch.no_grad():
        for images in batches:
            images = images.to(device)
            if transform is not None:
                images = transform(images)
            stats.update(extractor(images))
    return stats


def warn_if_few_samples(count: int, name: str = "FID", minimum: int = FID_MIN_SAMPLES) -> bool:
    """Log a warning (and return True) when ``count`` < ``minimum`` samples: the Frechet
    distance is then biased upwards and noisy."""
    if count < minimum:
        log.warning("%s from %d samples (< %d): biased upwards and noisy; compare only numbers "
                    "computed with the same sample count", name, count, minimum)
    return count < minimum


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # scipy warns on (near-)singular input; the caller checks the result for non-finite values.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (RuntimeWarning, linalg.LinAlgWarning))
        return linalg.sqrtm(matrix)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) of two Gaussians, in float64.

    Same algorithm as ``pytorch_fid.fid_score.calculate_frechet_distance`` (including the
    ``eps`` diagonal offset when the product is singular).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics do not match: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        log.warning("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrt(S1 S2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def stats_distance(a: ActivationStats, b: ActivationStats, name: str = "FID",
                   minimum: int = FID_MIN_SAMPLES) -> float:
    """Frechet distance between two ActivationStats, warning when either has few samples."""
    warn_if_few_samples(min(a.count, b.count), name, minimum)
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


def cached_reference_statistics(cache_dir: str | Path, compute: Callable[[], ActivationStats],
                                **provenance) -> ActivationStats:
    """Reference statistics cached as ``<cache_dir>/reference_<hash>.npz`` + provenance ``.json``.

    ``provenance`` must state what defines the statistics (split, count, resize, extractor,
    dataset...): it is hashed into the file name, so changing any of it recomputes.
    """
    key = hashlib.sha1(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"reference_{key}.npz"
    if path.is_file():
        log.info("reference statistics from cache %s", path)
        return ActivationStats.load(path)
    stats = compute()
    stats.save(path, **provenance)
    return stats
