"""Synthetic scenes: determinism, label law, appearance law, speed, DataLoader use."""
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.icpe import icpe_map
from data import synthetic
from data.labels import make_semantic
from data.synthetic import (CLASS_APPEARANCE, GROUND, SKY, SYNTHETIC_DONTCARE, SYNTHETIC_LABEL_NC, THING_CLASSES,
                            SyntheticScenes, expected_image, render_scene)
from models.presets import generator_config

SCENES = [render_scene(i, seed=0) for i in range(40)]


def test_constants_match_the_models_preset():
    config = generator_config("synthetic", "clade-icpe")
    assert SYNTHETIC_LABEL_NC == config.label_nc == 8 and SYNTHETIC_DONTCARE == config.label_nc
    assert config.contain_dontcare_label and not config.no_instance and config.crop_size == 64


def test_scene_depends_only_on_seed_and_index():
    again = render_scene(7, seed=0)
    assert np.array_equal(again.label, SCENES[7].label) and np.array_equal(again.image, SCENES[7].image)
    assert not np.array_equal(render_scene(7, seed=1).label, SCENES[7].label)
    assert not np.array_equal(SCENES[8].label, SCENES[7].label)
    ds = SyntheticScenes(10, seed=0, with_dist=False)
    assert torch.equal(ds[7]["image"], torch.from_numpy(SCENES[7].image))
    assert torch.equal(SyntheticScenes(3, seed=0, first_index=7)[0]["label"][0], torch.from_numpy(SCENES[7].label))


def test_labels_instances_and_dontcare():
    fractions = []
    for scene in SCENES:
        label, instance = scene.label, scene.instance
        assert label.shape == instance.shape == (64, 64) and label.dtype == np.int64
        assert label.min() >= 0 and label.max() <= SYNTHETIC_DONTCARE
        dontcare = label == SYNTHETIC_DONTCARE
        fractions.append(dontcare.mean())
        assert not instance[dontcare].any() and (instance[~dontcare] > 0).all()
        assert (label == SKY).any() and (label == GROUND).any()
        # Every instance id belongs to exactly one class.
        for k in np.unique(instance[~dontcare]):
            assert len(np.unique(label[instance == k])) == 1
    assert min(fractions) > 0.001 and max(fractions) < 0.1


def test_several_instances_per_thing_class_and_varied_classes():
    pairs = multi = 0
    seen = set()
    for scene in SCENES:
        for cls in set(np.unique(scene.label).tolist()) & set(THING_CLASSES):
            seen.add(cls)
            pairs += 1
            multi += len(np.unique(scene.instance[scene.label == cls])) >= 2
    assert seen == set(THING_CLASSES)
    assert multi / pairs > 0.75


def test_image_range_and_dontcare_noise():
    for scene in SCENES[:10]:
        image = scene.image
        assert image.shape == (3, 64, 64) and image.dtype == np.float32
        assert image.min() >= -1 and image.max() <= 1
        dontcare = scene.label == SYNTHETIC_DONTCARE
        assert image[:, dontcare].std(1).min() > 0.4  # uniform noise has std 0.577
        assert image[:, scene.label == SKY].std(1).max() < 0.3


def _instance_coordinates(scene):
    """u, v of the module docstring for every pixel."""
    y, x = np.mgrid[0:64, 0:64]
    u, v = np.zeros((64, 64)), np.zeros((64, 64))
    for k in np.unique(scene.instance):
        m = scene.instance == k
        cy, cx = y[m].mean(), x[m].mean()
        u[m] = (y[m] - cy) / (1 + np.abs(y[m] - cy).max())
        v[m] = (x[m] - cx) / (1 + np.abs(x[m] - cx).max())
    return u, v


def test_appearance_depends_on_position_inside_the_instance():
    """Along each class's light direction, the lit side is brighter: class means cannot explain it."""
    lit = {c: [] for c in THING_CLASSES}
    for scene in SCENES:
        u, v = _instance_coordinates(scene)
        brightness = scene.image.mean(0)
        for c in THING_CLASSES:
            a = CLASS_APPEARANCE[c]
            along = u * np.sin(a.light) + v * np.cos(a.light)
            m = scene.label == c
            if (m & (along > 0.3)).sum() > 5 and (m & (along < -0.3)).sum() > 5:
                lit[c].append(brightness[m & (along > 0.3)].mean() - brightness[m & (along < -0.3)].mean())
    for c, gaps in lit.items():
        assert len(gaps) >= 3 and np.mean(gaps) > 0.05, (c, gaps)


def test_classes_have_distinct_colours():
    means = {}
    for scene in SCENES:
        for c in range(SYNTHETIC_LABEL_NC):
            m = scene.label == c
            if m.any():
                means.setdefault(c, []).append(scene.image[:, m].mean(1))
    centres = np.stack([np.mean(means[c], 0) for c in range(SYNTHETIC_LABEL_NC)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(SYNTHETIC_LABEL_NC)
    assert gaps.min() > 0.15


def test_dataset_samples_and_collate():
    ds = SyntheticScenes(6, size=(48, 80), seed=2)
    sample = ds[0]
    assert sample["label"].shape == sample["instance"].shape == (1, 48, 80)
    assert sample["image"].shape == (3, 48, 80) and sample["dist"].shape == (2, 48, 80)
    assert torch.equal(sample["dist"], torch.from_numpy(icpe_map(sample["label"][0], mode="corrected",
                                                                 dontcare=SYNTHETIC_DONTCARE)))
    assert sample["path"] == "synthetic/seed2/00000000"
    batch = next(iter(DataLoader(ds, batch_size=3)))
    config = generator_config("synthetic", "clade-icpe")
    assert make_semantic(batch["label"], batch["instance"], config).shape == (3, 10, 48, 80)
    official = SyntheticScenes(1, icpe_mode="official")[0]
    assert not official["dist"][:, official["label"][0] == SKY].any()
    assert not SyntheticScenes(1, with_dist=False)[0]["dist"].any()
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(ValueError, match=r"icpe_mode|mode='x'"):
        SyntheticScenes(2, icpe_mode="x")
    with pytest.raises(ValueError, match=r"at least 8 x 8"):
        render_scene(0, size=4)


def test_generation_is_fast():
    ds = SyntheticScenes(20, seed=3)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    per_sample = (time.perf_counter() - start) / len(ds)
    assert per_sample < 0.1  # a few ms in practice; generous for a loaded machine


@pytest.mark.parametrize("index, size", [(3, 32), (5, 32), (1, 16)])
def test_expected_image_is_the_mean_of_the_law_over_its_appearance_draws(index, size):
    # Render one layout's appearance 400 times with fresh draws (phases, noise cells, pixel noise):
    # the per-pixel z-score of the Monte-Carlo mean against expected_image is N(0, 1). Leaving out the
    # clip or the checks' position-dependent mean gives biases of 0.1-0.3 (z in the tens).
    rng = np.random.default_rng([0, index])
    label, instance, y, x = synthetic._layout(rng, size, size)
    draws_rng = np.random.default_rng(7)
    draws = np.stack([synthetic._appearance(draws_rng, label, instance, y, x) for _ in range(400)]).astype(np.float64)
    expected = expected_image(index, seed=0, size=size)
    assert expected.shape == (3, size, size) and expected.dtype == np.float32
    assert np.array_equal(synthetic.render_scene(index, 0, size).label, label)
    keep = np.broadcast_to(label != SYNTHETIC_DONTCARE, expected.shape)
    # Floor the standard error at the pixel noise's: a pixel clipped in almost every draw has a
    # sample spread of ~0 although its expectation is not exactly 0 or 1.
    se = np.maximum(draws.std(0, ddof=1), 2 * synthetic.PIXEL_NOISE) / np.sqrt(len(draws))
    z = ((draws.mean(0) - expected) / se)[keep]
    assert 0.8 < (z ** 2).mean() < 1.25 and np.abs(z).max() < 5.5
    assert (expected[:, label == SYNTHETIC_DONTCARE] == 0).all()
    assert expected.min() > -1 and expected.max() < 1
