"""Transforms equal the official torchvision / PIL / F.interpolate pipelines."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from data.transforms import (Preprocess, TransformParams, draw_params, nearest_indices, transform_icpe,
                             transform_image, transform_map)

TRAIN = Preprocess("resize_and_crop", load_size=40, crop_size=32, flip=True)
FIXED = Preprocess("fixed", crop_size=32, aspect_ratio=2.0, flip=True)


def photo(w=53, h=37, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def official_pipeline(pre: Preprocess, params: TransformParams, method, to_tensor: bool):
    """The official get_transform, written with torchvision as the official code does."""
    steps = []
    if pre.preprocess_mode == "resize_and_crop":
        x, y = params.crop_pos
        steps += [T.Resize([pre.load_size, pre.load_size], interpolation=method),
                  T.Lambda(lambda im: im.crop((x, y, x + pre.crop_size, y + pre.crop_size)))]
    else:
        h, w = pre.output_size
        steps += [T.Lambda(lambda im: im.resize((w, h), method))]
    if params.flip:
        steps += [T.Lambda(lambda im: im.transpose(Image.FLIP_LEFT_RIGHT))]
    if to_tensor:
        steps += [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    return T.Compose(steps)


@pytest.mark.parametrize("pre", [TRAIN, FIXED])
@pytest.mark.parametrize("params", [TransformParams((3, 5), True), TransformParams((8, 0), False)])
def test_image_equals_official_transform(pre, params):
    if pre.preprocess_mode == "fixed":
        params = TransformParams((0, 0), params.flip)
    ours = transform_image(photo(), pre, params)
    official = official_pipeline(pre, params, Image.BICUBIC, True)(photo())
    assert ours.shape == (3, *pre.output_size) and ours.dtype == torch.float32
    assert torch.equal(ours, official)


@pytest.mark.parametrize("pre", [TRAIN, FIXED])
def test_label_equals_official_nearest_transform(pre):
    label = np.random.default_rng(1).integers(0, 183, (37, 53), dtype=np.uint8)
    for params in (TransformParams((0, 0), False), TransformParams((8, 8) if pre is TRAIN else (0, 0), True)):
        ours = transform_map(label, pre, params)
        official = np.asarray(official_pipeline(pre, params, Image.NEAREST, False)(Image.fromarray(label)))
        np.testing.assert_array_equal(ours, official)


@pytest.mark.parametrize("n_in, n_out", [(37, 40), (480, 286), (640, 286), (53, 32), (1024, 256), (20, 64)])
def test_pil_nearest_indices_are_separable(n_in, n_out):
    index = (np.arange(n_in)[:, None] * 1000 + np.arange(7)[None, :]).astype(np.int32)
    resized = np.asarray(Image.fromarray(index, mode="I").resize((7, n_out), Image.NEAREST))
    np.testing.assert_array_equal(resized[:, 0] // 1000, nearest_indices(n_in, n_out, "pil"))


@pytest.mark.parametrize("pre", [TRAIN, FIXED])
def test_official_icpe_transform_equals_official_transform_offset(pre):
    dist = np.random.default_rng(2).standard_normal((2, 37, 53)).astype(np.float32)
    params = TransformParams((5, 2) if pre is TRAIN else (0, 0), True)
    # The official transform_offset: F.interpolate(nearest), slice crop, flip(2) on [1, 2, H, W].
    official = torch.from_numpy(dist)[None]
    if pre is TRAIN:
        official = F.interpolate(official, size=[pre.load_size, pre.load_size], mode="nearest")
        official = official[:, :, 2:2 + pre.crop_size, 5:5 + pre.crop_size]
    else:
        official = F.interpolate(official, size=list(pre.output_size), mode="nearest")
    official = official.flip(2)[0]
    assert torch.equal(transform_icpe(dist, pre, params, "official"), official)


def test_corrected_icpe_transform_samples_the_label_pixels_and_mirrors():
    h, w = 37, 53
    index = np.arange(h * w).reshape(h, w)
    dist = np.stack([index, index]).astype(np.float32)
    for params in (TransformParams((5, 2), False), TransformParams((5, 2), True)):
        out = transform_icpe(dist, TRAIN, params, "corrected")
        np.testing.assert_array_equal(out[0].numpy(), transform_map(index, TRAIN, params))
        sign = -1 if params.flip else 1
        np.testing.assert_array_equal(out[1].numpy(), sign * transform_map(index, TRAIN, params))
    # The official sampling is different somewhere, which is why corrected does not use it.
    official = transform_icpe(dist, TRAIN, TransformParams((5, 2), False), "official")
    assert not np.array_equal(official[0].numpy(), transform_map(index, TRAIN, TransformParams((5, 2), False)))


def test_draw_params_is_deterministic_and_covers_the_official_range():
    draws = [draw_params(TRAIN, np.random.default_rng([0, 0, i])) for i in range(400)]
    again = [draw_params(TRAIN, np.random.default_rng([0, 0, i])) for i in range(400)]
    assert draws == again
    xs = {p.crop_pos[0] for p in draws}
    ys = {p.crop_pos[1] for p in draws}
    assert xs == ys == set(range(0, 9))  # randint(0, load - crop) is inclusive
    assert 120 < sum(p.flip for p in draws) < 280
    no_flip = Preprocess("resize_and_crop", load_size=40, crop_size=32, flip=False)
    assert not any(draw_params(no_flip, np.random.default_rng(i)).flip for i in range(50))
    assert {draw_params(FIXED, np.random.default_rng(i)).crop_pos for i in range(50)} == {(0, 0)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(preprocess_mode="scale_width"), r"preprocess_mode='scale_width'; expected one of"),
    (dict(load_size=200, crop_size=256), r"load_size=200 is smaller than crop_size=256"),
])
def test_bad_preprocess_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocess(**kwargs)
