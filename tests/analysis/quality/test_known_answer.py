"""Known-answer metrics: 0 for the law's expectation, 1 for the trivial answer, computed values between."""
import numpy as np
import pytest
import torch

from analysis.quality.known_answer import MIN_INSTANCE_PIXELS, base_colour_error, shading_error
from data.synthetic import expected_image, instance_coordinates, render_scene

INDICES = range(4)
EXPECTED = np.stack([expected_image(i, seed=0, size=32) for i in INDICES]).astype(np.float64)
INSTANCE = np.stack([render_scene(i, seed=0, size=32).instance for i in INDICES])


def _instances():
    for n, ids in enumerate(INSTANCE):
        values, counts = np.unique(ids, return_counts=True)
        for k in values[(values != 0) & (counts >= MIN_INSTANCE_PIXELS)]:
            yield n, ids == k


def _per_instance(image_of, images=EXPECTED):
    """A copy of ``images`` with each scored instance's pixels replaced by ``image_of(pixels [3, P])``."""
    out = images.copy()
    for n, mask in _instances():
        out[n][:, mask] = image_of(images[n][:, mask])
    return out


def _shading_energy(n, mask, image):
    """||P(centred image)||^2 over one instance, P the projection on the centred u, v, u^2 + v^2 (pinv)."""
    u, v = (c[mask] for c in instance_coordinates(INSTANCE[n]))
    basis = np.stack([u, v, u ** 2 + v ** 2], 1)
    basis -= basis.mean(0)
    values = image[:, mask].T - image[:, mask].T.mean(0)
    projected = basis @ np.linalg.pinv(basis) @ values
    return (projected ** 2).sum()


def test_shading_error_is_zero_for_the_expected_image():
    score = shading_error(torch.from_numpy(EXPECTED).float(), EXPECTED, torch.from_numpy(INSTANCE)[:, None])
    # float64 rounding of the fit: relative energy ~ eps^2 = 5e-32 per term; a real error is >= 1e-6.
    assert score.ratio < 1e-26
    assert (score.per_instance.error_energy < 1e-26 * score.per_instance.expected_energy.max()).all() and (score.per_instance.expected_energy > 0).all()


def test_shading_error_is_one_for_images_constant_inside_every_instance():
    rng = np.random.default_rng(0)
    flat = _per_instance(lambda pixels: np.broadcast_to(rng.uniform(-1, 1, (3, 1)), pixels.shape))
    assert abs(shading_error(flat, EXPECTED, INSTANCE).ratio - 1) < 1e-12


@pytest.mark.parametrize("alpha", [0.3, -1.0, 2.5])
def test_shading_error_of_scaled_shading_is_one_minus_the_scale_squared(alpha):
    # Each instance keeps its mean plus alpha times the expected deviation from it: error (1 - alpha)^2.
    scaled = _per_instance(lambda p: p.mean(1, keepdims=True) + alpha * (p - p.mean(1, keepdims=True)) + 0.1)
    assert abs(shading_error(scaled, EXPECTED, INSTANCE).ratio - (1 - alpha) ** 2) < 1e-12


def test_shading_error_of_half_the_instances_flat_is_their_share_of_the_shading_energy():
    flat_ids = {(n, int(INSTANCE[n][mask][0])) for i, (n, mask) in enumerate(_instances()) if i % 2}
    images, energy, missing = EXPECTED.copy(), 0.0, 0.0
    for n, mask in _instances():
        e = _shading_energy(n, mask, EXPECTED[n])
        energy += e
        if (n, int(INSTANCE[n][mask][0])) in flat_ids:
            images[n][:, mask] = EXPECTED[n][:, mask].mean(1, keepdims=True)
            missing += e
    score = shading_error(images, EXPECTED, INSTANCE)
    assert 0.2 < missing / energy < 0.8
    assert abs(score.ratio - missing / energy) < 1e-12
    flat_rows = score.per_instance[[(n, k) in flat_ids for n, k in zip(score.per_instance.image,
                                                                        score.per_instance.instance)]]
    assert np.allclose(flat_rows.error_energy, flat_rows.expected_energy, rtol=1e-12, atol=0)


def test_per_instance_table_scores_every_instance_of_16_pixels_except_dontcare():
    table = shading_error(EXPECTED, EXPECTED, INSTANCE).per_instance
    wanted = sorted((n, int(INSTANCE[n][mask][0]), int(mask.sum())) for n, mask in _instances())
    assert sorted(zip(table.image, table.instance, table.pixels)) == wanted
    assert 0 not in set(table.instance) and table.pixels.min() >= MIN_INSTANCE_PIXELS
    small = [(ids == k).sum() for ids in INSTANCE for k in np.unique(ids) if k]
    assert min(small) < MIN_INSTANCE_PIXELS  # the scenes do contain instances the metric leaves out


def test_base_colour_error_is_zero_for_expected_and_one_for_its_mean_colour():
    assert base_colour_error(EXPECTED, EXPECTED, INSTANCE).ratio == 0.0
    weights = [(n, mask) for n, mask in _instances()]
    pixels = sum(mask.sum() for _, mask in weights)
    mean = sum(EXPECTED[n][:, mask].sum(1) for n, mask in weights) / pixels
    constant = np.broadcast_to(mean[None, :, None, None], EXPECTED.shape)
    assert abs(base_colour_error(constant, EXPECTED, INSTANCE).ratio - 1) < 1e-12


def test_base_colour_error_of_a_shifted_image_is_the_shift_energy_over_the_colour_spread():
    shift = np.array([0.1, -0.2, 0.05])
    pairs = list(_instances())
    pixels = np.array([mask.sum() for _, mask in pairs])
    means = np.stack([EXPECTED[n][:, mask].mean(1) for n, mask in pairs])
    spread = (pixels[:, None] * (means - (pixels[:, None] * means).sum(0) / pixels.sum()) ** 2).sum()
    ratio = base_colour_error(EXPECTED + shift[None, :, None, None], EXPECTED, INSTANCE).ratio
    assert abs(ratio - pixels.sum() * (shift ** 2).sum() / spread) < 1e-12
    # Shading alone does not move an instance's mean colour.
    flat = _per_instance(lambda p: np.broadcast_to(p.mean(1, keepdims=True), p.shape))
    assert base_colour_error(flat, EXPECTED, INSTANCE).ratio < 1e-28


def test_bad_shapes_and_nothing_to_score_are_clear_errors():
    with pytest.raises(ValueError, match=r"images \(4, 3, 32, 32\) and expected \(4, 3, 16, 16\)"):
        shading_error(EXPECTED, EXPECTED[..., :16, :16], INSTANCE)
    with pytest.raises(ValueError, match=r"instance map \(4, 16, 16\); expected \[N, H, W\] = \(4, 32, 32\)"):
        base_colour_error(EXPECTED, EXPECTED, INSTANCE[:, :16, :16])
    with pytest.raises(ValueError, match="no instance with at least 16 pixels"):
        shading_error(EXPECTED, EXPECTED, np.zeros_like(INSTANCE))
