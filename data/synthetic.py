"""Built-in procedural scenes: label maps, instance maps and images, deterministic by seed.

    ds = SyntheticScenes(1000, size=64, seed=0)       # torch Dataset of sample dicts
    scene = render_scene(17, seed=0, size=64)         # one scene as numpy arrays

Sample ``i`` depends only on ``(seed, i)``: its generator is ``np.random.default_rng([seed, i])``.
Classes 0..7 (``SYNTHETIC_LABEL_NC = 8``) plus dontcare id 8 (``SYNTHETIC_DONTCARE``), matching
the models preset "synthetic" (label_nc=8, contain_dontcare_label=True, instance maps).

Generative law of one H x W scene (S = min(H, W); lengths below scale with S, frequencies
are in cycles per pixel at S = 64 and scale as 64 / S):

1. Layout. Class 0 "sky" above a horizon row ``h(x) = H * (b + a sin(2 pi x / (p W) + phi))``,
   ``b ~ U(0.3, 0.6)``, ``a ~ U(0, 0.08)``, ``p ~ U(0.5, 1.5)``, phi ~ U(0, 2 pi); class 1
   "ground" below it (instances 1 and 2). Then m ~ U{2..4} distinct thing classes out of 2..7,
   each with k ~ U{2..4} instances, are painted in random order (later ones occlude earlier
   ones). Each instance: centre ~ U(0.1, 0.9) * (H, W), radius r ~ U(0.06, 0.2) * S, aspect
   ~ U(0.6, 1.6) (radii r * aspect^0.5 along its own x axis, r / aspect^0.5 along y), rotation
   ~ U(0, pi), shape uniform among ellipse, rotated rectangle and blob (ellipse whose radius is
   modulated by ``1 + c2 cos(2 t + p2) + c3 cos(3 t + p3)``, c2, c3 ~ U(0, 0.25)). Instance ids
   are 3, 4, ... in painting order (unique per scene; fully hidden instances vanish). Last, one
   dontcare region (label 8, instance 0): an ellipse of radius ~ U(0.05, 0.1) * S.
2. Appearance of a pixel (row y, column x) of instance k of class c, in [0, 1] RGB. Let
   (cy, cx) be the centroid of the visible pixels of instance k, ey = 1 + max |y - cy| and
   ex = 1 + max |x - cx| over them, u = (y - cy) / ey, v = (x - cx) / ex (so u, v in (-1, 1)).

       shade = 1 + s_c (u sin(theta_c) + v cos(theta_c)) - q_c (u^2 + v^2)
       rgb = base_c * shade + amp_c * texture_c(y, x) + N(0, 0.02^2)   (clipped to [0, 1])

   with per-class constants in ``CLASS_APPEARANCE`` (base colour, light direction theta_c and
   strength s_c, rim darkening q_c, texture kind, frequency f_c and amplitude amp_c):
   stripes ``sin(2 pi f_c (x cos(a_c) + y sin(a_c)) + phase_k)``, checks
   ``sign(sin(2 pi f_c x + phase_k) sin(2 pi f_c y + phase_k))``, or noise (a N(0, 1) grid of
   cells of 1 / (2 f_c) pixels, nearest-upsampled); phase_k ~ U(0, 2 pi) per instance. The image
   is ``2 rgb - 1``. Dontcare pixels are U(-1, 1) noise per pixel and channel.

So a pixel's colour depends on its class (base, texture) *and* on its position relative to its
instance's centroid and extent (shading): a per-class modulation (CLADE) cannot produce the
shading, a positional encoding of intra-class position (CLADE-ICPE) or a spatially aware one
(SPADE, from the instance edges) can.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import special
from torch.utils.data import Dataset

from data.icpe import DEFAULT_MODE, icpe_map

SYNTHETIC_LABEL_NC = 8
SYNTHETIC_DONTCARE = 8  # = label_nc: the dontcare channel of the "synthetic" preset
CLASS_NAMES = ("sky", "ground", "disc", "tile", "leaf", "stone", "fruit", "cloth")
SKY, GROUND = 0, 1
THING_CLASSES = tuple(range(2, SYNTHETIC_LABEL_NC))
SHAPES = ("ellipse", "rectangle", "blob")
TEXTURES = ("stripes", "checks", "noise")
PIXEL_NOISE = 0.02


@dataclass(frozen=True)
class Appearance:
    """Per-class constants of the appearance law (module docstring)."""

    base: tuple[float, float, float]  # RGB in [0, 1]
    light: float                       # theta_c, direction of the shading gradient (radians)
    strength: float                    # s_c, gradient strength across the instance
    rim: float                         # q_c, darkening towards the instance's rim
    texture: str                       # stripes | checks | noise
    frequency: float                   # f_c, cycles per pixel at S = 64
    amplitude: float                   # amp_c
    angle: float = 0.0                 # a_c, stripe orientation (radians)


CLASS_APPEARANCE: tuple[Appearance, ...] = (
    Appearance((0.45, 0.65, 0.95), -np.pi / 2, 0.35, 0.00, "noise", 1 / 16, 0.04),    # sky
    Appearance((0.45, 0.35, 0.20), np.pi / 2, 0.25, 0.00, "noise", 1 / 4, 0.10),      # ground
    Appearance((0.85, 0.20, 0.20), np.pi / 4, 0.40, 0.35, "stripes", 0.25, 0.12, 0.0),
    Appearance((0.20, 0.70, 0.30), 3 * np.pi / 4, 0.30, 0.25, "checks", 1 / 8, 0.10),
    Appearance((0.90, 0.80, 0.20), -np.pi / 4, 0.45, 0.30, "stripes", 0.10, 0.12, np.pi / 3),
    Appearance((0.50, 0.50, 0.55), np.pi / 2, 0.35, 0.40, "noise", 1 / 6, 0.12),
    Appearance((0.70, 0.30, 0.80), np.pi, 0.40, 0.20, "stripes", 0.18, 0.10, 2 * np.pi / 3),
    Appearance((0.20, 0.60, 0.85), -np.pi / 2, 0.30, 0.45, "checks", 0.20, 0.08),
)


@dataclass(frozen=True)
class Scene:
    """One rendered scene."""

    label: np.ndarray     # int64 [H, W], class ids 0..7 and dontcare 8
    instance: np.ndarray  # int64 [H, W], 0 on dontcare, 1 sky, 2 ground, 3.. things
    image: np.ndarray     # float32 [3, H, W] in [-1, 1]


def _size(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise ValueError(f"synthetic scene size {(h, w)}; expected at least 8 x 8 pixels")
    return int(h), int(w)


def _shape_mask(rng, shape: str, y, x, cy, cx, radius, aspect, rotation) -> np.ndarray:
    dy, dx = y - cy, x - cx
    cos, sin = np.cos(rotation), np.sin(rotation)
    along = (dx * cos + dy * sin) / (radius * np.sqrt(aspect))
    across = (-dx * sin + dy * cos) / (radius / np.sqrt(aspect))
    if shape == "rectangle":
        return (np.abs(along) <= 1) & (np.abs(across) <= 1)
    reach = 1.0
    if shape == "blob":
        c2, c3, p2, p3 = rng.uniform(0, 0.25), rng.uniform(0, 0.25), *rng.uniform(0, 2 * np.pi, 2)
        angle = np.arctan2(across, along)
        reach = 1 + c2 * np.cos(2 * angle + p2) + c3 * np.cos(3 * angle + p3)
    return along ** 2 + across ** 2 <= reach ** 2


def _layout(rng, h: int, w: int):
    """Label and instance maps (steps 1 of the law)."""
    s = min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    b, a, p, phi = rng.uniform(0.3, 0.6), rng.uniform(0, 0.08), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    horizon = h * (b + a * np.sin(2 * np.pi * x / (p * w) + phi))
    label = np.where(y < horizon, SKY, GROUND).astype(np.int64)
    instance = label + 1
    classes = rng.choice(THING_CLASSES, size=rng.integers(2, 5), replace=False)
    things = np.repeat(classes, rng.integers(2, 5, size=classes.size))
    for number, cls in enumerate(rng.permutation(things)):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        mask = _shape_mask(rng, SHAPES[rng.integers(len(SHAPES))], y, x, cy, cx,
                           rng.uniform(0.06, 0.2) * s, rng.uniform(0.6, 1.6), rng.uniform(0, np.pi))
        label[mask] = cls
        instance[mask] = 3 + number
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    mask = _shape_mask(rng, "ellipse", y, x, cy, cx, rng.uniform(0.05, 0.1) * s, 1.0, 0.0)
    label[mask] = SYNTHETIC_DONTCARE
    instance[mask] = 0
    return label, instance, y, x


def _class_table(field: str) -> np.ndarray:
    """Per-class constant as an array indexed by label (dontcare row = 0)."""
    values = [np.asarray(getattr(a, field), dtype=np.float64) for a in CLASS_APPEARANCE]
    return np.stack(values + [np.zeros_like(values[0])])


_BASE, _LIGHT, _STRENGTH, _RIM = (_class_table(f) for f in ("base", "light", "strength", "rim"))
_FREQ, _AMP, _ANGLE = (_class_table(f) for f in ("frequency", "amplitude", "angle"))
_KIND = np.array([TEXTURES.index(a.texture) for a in CLASS_APPEARANCE] + [0])


def instance_coordinates(instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The law's intra-instance coordinates (u, v) of every pixel of an [H, W] instance map.

    u = (y - cy) / ey, v = (x - cx) / ex with (cy, cx) the centroid of the instance's pixels and
    ey = 1 + max |y - cy|, ex = 1 + max |x - cx| over them (module docstring, step 2); float64.
    """
    h, w = instance.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    flat = instance.reshape(-1)
    n = int(flat.max()) + 1
    count = np.maximum(np.bincount(flat, minlength=n), 1)
    cy = np.bincount(flat, y.reshape(-1), n) / count
    cx = np.bincount(flat, x.reshape(-1), n) / count
    ey, ex = np.zeros(n), np.zeros(n)
    np.maximum.at(ey, flat, np.abs(y.reshape(-1) - cy[flat]))
    np.maximum.at(ex, flat, np.abs(x.reshape(-1) - cx[flat]))
    return (y - cy[instance]) / (1 + ey[instance]), (x - cx[instance]) / (1 + ex[instance])


def _shaded_base(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """base_c * shade of every pixel, [3, H, W] in RGB [0, 1] units before texture and noise."""
    u, v = instance_coordinates(instance)
    light = _LIGHT[label]
    shade = 1 + _STRENGTH[label] * (u * np.sin(light) + v * np.cos(light)) - _RIM[label] * (u ** 2 + v ** 2)
    return _BASE[label].transpose(2, 0, 1) * shade


def _appearance(rng, label, instance, y, x) -> np.ndarray:
    """RGB image in [-1, 1] (step 2 of the law)."""
    h, w = label.shape
    scale = 64 / min(h, w)
    n = int(instance.max()) + 1
    phase = rng.uniform(0, 2 * np.pi, n)[instance]
    freq = 2 * np.pi * _FREQ[label] * scale
    stripes = np.sin(freq * (x * np.cos(_ANGLE[label]) + y * np.sin(_ANGLE[label])) + phase)
    checks = np.sign(np.sin(freq * x + phase) * np.sin(freq * y + phase))
    noise = np.zeros((h, w))
    kind = _KIND[label]
    for cls in np.unique(label[kind == TEXTURES.index("noise")]):
        cell = max(1, round(1 / (2 * _FREQ[cls] * scale)))
        grid = rng.standard_normal((h // cell + 1, w // cell + 1))
        noise = np.where(label == cls, grid.repeat(cell, 0).repeat(cell, 1)[:h, :w], noise)
    texture = np.choose(kind, (stripes, checks, noise))

    rgb = _shaded_base(label, instance) + _AMP[label] * texture
    rgb = np.clip(rgb + rng.normal(0, PIXEL_NOISE, rgb.shape), 0, 1)
    image = 2 * rgb - 1
    dontcare = label == SYNTHETIC_DONTCARE
    image[:, dontcare] = rng.uniform(-1, 1, (3, int(dontcare.sum())))
    return image.astype(np.float32)


def render_scene(index: int, seed: int = 0, size=64) -> Scene:
    """Scene ``index`` of the stream ``seed`` (the law in the module docstring)."""
    if index < 0 or seed < 0:
        raise ValueError(f"index={index}, seed={seed}; expected non-negative integers")
    h, w = _size(size)
    rng = np.random.default_rng([seed, index])
    label, instance, y, x = _layout(rng, h, w)
    return Scene(label, instance, _appearance(rng, label, instance, y, x))


# Nodes of the periodic trapezoid rule over the stripes' phase: the integrand is smooth (the noise
# smooths the clip), so the rule converges geometrically; 256 nodes are exact to float64 rounding.
_PHASE_NODES = 256


def _mean_clipped(mean: np.ndarray, std) -> np.ndarray:
    """E[clip(Z, 0, 1)] for Z ~ N(mean, std^2): E[max(Z, 0)] - E[max(Z - 1, 0)], closed form."""
    def positive_part(m):
        return m * special.ndtr(m / std) + std * np.exp(-0.5 * (m / std) ** 2) / np.sqrt(2 * np.pi)
    return positive_part(mean) - positive_part(mean - 1)


def expected_image(index: int, seed: int = 0, size=64) -> np.ndarray:
    """E[image | layout] of scene ``index``: texture phases, noise cells and pixel noise averaged out.

    float32 [3, H, W] in [-1, 1], computed exactly (clipping included) from the law in the
    module docstring: pixel noise is Gaussian, so E[clip(m + noise, 0, 1)] has a closed form;
    a noise texture adds a N(0, amp^2) term to it; a stripe is sin(uniform phase) at every pixel
    (trapezoid rule over the phase); a check is +amp with probability 1 - |d| / pi, where
    d = 2 pi f (x - y) wrapped to [-pi, pi] (both factors share one phase), else -amp. Dontcare
    pixels (uniform noise) have expectation 0.
    """
    scene = render_scene(index, seed, size)
    label, instance = scene.label, scene.instance
    h, w = label.shape
    shaded, amp, kind = _shaded_base(label, instance), _AMP[label], _KIND[label]
    expected = np.zeros((3, h, w))

    noise = kind == TEXTURES.index("noise")
    expected[:, noise] = _mean_clipped(shaded[:, noise], np.sqrt(amp[noise] ** 2 + PIXEL_NOISE ** 2))

    stripes = kind == TEXTURES.index("stripes")
    phases = 2 * np.pi * np.arange(_PHASE_NODES) / _PHASE_NODES
    draws = shaded[:, stripes][..., None] + amp[stripes][:, None] * np.sin(phases)
    expected[:, stripes] = _mean_clipped(draws, PIXEL_NOISE).mean(-1)

    checks = kind == TEXTURES.index("checks")
    y, x = np.mgrid[0:h, 0:w]
    turn = 2 * np.pi * _FREQ[label] * (64 / min(h, w)) * (x - y)
    positive = 1 - np.abs(np.angle(np.exp(1j * turn))) / np.pi
    p, m, a = positive[checks], shaded[:, checks], amp[checks]
    expected[:, checks] = p * _mean_clipped(m + a, PIXEL_NOISE) + (1 - p) * _mean_clipped(m - a, PIXEL_NOISE)

    image = 2 * expected - 1
    image[:, label == SYNTHETIC_DONTCARE] = 0.0
    return image.astype(np.float32)


class SyntheticScenes(Dataset):
    """``num_samples`` procedural scenes as sample dicts (label, instance, image, dist, path).

        loader = DataLoader(SyntheticScenes(512, size=64), batch_size=16, num_workers=2)

    ``first_index``: scene index of item 0 (disjoint splits of one seed's stream).
    """

    def __init__(self, num_samples: int, size=64, seed: int = 0, with_dist: bool = True,
                 icpe_mode: str = DEFAULT_MODE, first_index: int = 0):
        if num_samples < 0:
            raise ValueError(f"num_samples={num_samples}; expected a non-negative count")
        self.num_samples, self.size, self.seed = num_samples, _size(size), seed
        self.with_dist, self.icpe_mode, self.first_index = with_dist, icpe_mode, first_index
        # Fail now, not in a worker, on a bad mode.
        icpe_map(np.zeros((1, 1), np.int64), mode=icpe_mode, dontcare=self._dontcare)

    @property
    def _dontcare(self) -> int | None:
        return SYNTHETIC_DONTCARE if self.icpe_mode == "corrected" else None

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """No augmentation: scenes do not change with the epoch (uniform dataset interface)."""

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} synthetic scenes")
        number = self.first_index + index
        scene = render_scene(number, self.seed, self.size)
        h, w = self.size
        dist = (torch.from_numpy(icpe_map(scene.label, mode=self.icpe_mode, dontcare=self._dontcare))
                if self.with_dist else torch.zeros(2, h, w))
        return {"label": torch.from_numpy(scene.label)[None],
                "instance": torch.from_numpy(scene.instance)[None],
                "image": torch.from_numpy(scene.image),
                "dist": dist,
                "path": f"synthetic/seed{self.seed}/{number:08d}"}
