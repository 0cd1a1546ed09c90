"""Known-answer quality on the built-in scenes: how much of the law's shading and base colour an image has.

    expected = torch.stack([torch.from_numpy(expected_image(i, seed=s, size=32)) for i in indices])
    score = shading_error(generated, expected, instance)       # score.ratio, score.per_instance
    colour = base_colour_error(generated, expected, instance)

The scenes' law (``data.synthetic``) colours a pixel of instance k as base_c x shade + texture + noise,
where shade is linear in the instance's coordinates u, v and in u^2 + v^2. ``expected`` is the law's
E[image | layout] (``data.synthetic.expected_image``). Both metrics are ratios of squared errors
summed over every instance with at least ``MIN_INSTANCE_PIXELS`` pixels (dontcare, instance id 0,
excluded), in float64, with these known answers:

- shading error: 0 for ``expected`` itself, 1 for any image constant inside every instance (no
  shading: what a per-class modulation without position produces), values in between measure
  the share of the law's shading energy that is missing or wrong; above 1 is worse than flat.
- base-colour error: 0 for ``expected``, 1 for the constant image of the expected images' mean
  colour (an image that ignores the layout).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from data.synthetic import instance_coordinates

MIN_INSTANCE_PIXELS = 16  # smaller instances give an ill-conditioned 3-column fit


@dataclass(frozen=True)
class KnownAnswerScore:
    """A known-answer ratio and the per-instance sums it is made of."""

    ratio: float                # sum of error_energy / sum of expected_energy
    per_instance: pd.DataFrame  # image, instance, pixels, error_energy, expected_energy


def _numpy(array) -> np.ndarray:
    """A tensor (any dtype, bf16 included, any device) or array-like as a numpy array."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float64 if array.is_floating_point() else torch.int64).numpy()
    return np.asarray(array)


def _checked(images, expected, instance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, expected = _numpy(images).astype(np.float64), _numpy(expected).astype(np.float64)
    instance = _numpy(instance)
    if instance.ndim == 4 and instance.shape[1] == 1:
        instance = instance[:, 0]
    if images.ndim != 4 or images.shape[1] != 3 or images.shape != expected.shape:
        raise ValueError(f"images {images.shape} and expected {expected.shape}; expected two [N, 3, H, W] "
                         f"arrays of one shape")
    if instance.shape != (images.shape[0],) + images.shape[2:]:
        raise ValueError(f"instance map {instance.shape}; expected [N, H, W] = "
                         f"{(images.shape[0],) + images.shape[2:]} to match the images")
    return images, expected, instance.astype(np.int64)


def _scored_instances(instance: np.ndarray):
    """(image index, instance id, pixel mask) of every instance that is scored."""
    for n, ids in enumerate(instance):
        values, counts = np.unique(ids, return_counts=True)
        for k in values[(values != 0) & (counts >= MIN_INSTANCE_PIXELS)]:
            yield n, int(k), ids == k


def _score(rows: list[dict]) -> KnownAnswerScore:
    if not rows:
        raise ValueError(f"no instance with at least {MIN_INSTANCE_PIXELS} pixels to score")
    table = pd.DataFrame(rows, columns=["image", "instance", "pixels", "error_energy", "expected_energy"])
    return KnownAnswerScore(float(table.error_energy.sum() / table.expected_energy.sum()), table)


def shading_error(images, expected, instance) -> KnownAnswerScore:
    """Share of the law's shading that ``images`` miss: 0 for ``expected``, 1 for instance-constant images.

    images, expected: [N, 3, H, W] in [-1, 1] (tensors or arrays); instance: [N, H, W] (or [N, 1, H, W])
    ids. Per instance and channel, both images are centred over the instance's pixels and projected
    (least squares) on the law's shading basis u, v, u^2 + v^2 (centred; ``instance_coordinates``);
    the ratio is sum ||P(image) - P(expected)||^2 / sum ||P(expected)||^2. The expected image is
    projected too, so the part of E[image | layout] outside the basis (where clipping bends the
    shading, the checks texture's mean pattern) is neither required nor penalised.
    """
    images, expected, instance = _checked(images, expected, instance)
    rows = []
    coordinates = [instance_coordinates(ids) for ids in instance]
    for n, k, mask in _scored_instances(instance):
        u, v = coordinates[n][0][mask], coordinates[n][1][mask]
        basis = np.stack([u, v, u ** 2 + v ** 2], 1)
        basis -= basis.mean(0)
        generated, truth = images[n][:, mask].T, expected[n][:, mask].T  # [pixels, 3 channels]
        fit = basis @ np.linalg.lstsq(basis, np.concatenate([generated, truth], 1), rcond=None)[0]
        projected, projected_truth = fit[:, :3], fit[:, 3:]
        rows.append({"image": n, "instance": k, "pixels": int(mask.sum()),
                     "error_energy": float(((projected - projected_truth) ** 2).sum()),
                     "expected_energy": float((projected_truth ** 2).sum())})
    return _score(rows)


def base_colour_error(images, expected, instance) -> KnownAnswerScore:
    """Error of the instances' mean colours: 0 for ``expected``, 1 for its mean colour everywhere.

    Same inputs as ``shading_error``. Per scored instance k with n_k pixels, generated mean colour
    g_k and expected mean colour e_k (3 channels): error_energy = n_k ||g_k - e_k||^2 and
    expected_energy = n_k ||e_k - e||^2, with e the pixel-weighted mean of every scored instance's
    expected colour; the ratio is the sum of the first over the sum of the second.
    """
    images, expected, instance = _checked(images, expected, instance)
    found = [(n, k, int(mask.sum()), images[n][:, mask].mean(1), expected[n][:, mask].mean(1))
             for n, k, mask in _scored_instances(instance)]
    if not found:
        return _score([])
    pixels = np.array([f[2] for f in found], dtype=np.float64)
    overall = (np.stack([f[4] for f in found]) * pixels[:, None]).sum(0) / pixels.sum()
    rows = [{"image": n, "instance": k, "pixels": count,
             "error_energy": float(count * ((mean - truth) ** 2).sum()),
             "expected_energy": float(count * ((truth - overall) ** 2).sum())}
            for n, k, count, mean, truth in found]
    return _score(rows)
