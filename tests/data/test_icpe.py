"""ICPE: official mode equals the official outputs, corrected mode's properties, batched paths, flips."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from data.icpe import EPS, flip_icpe, icpe_map, icpe_map_batch
from analysis.speed.icpe_bench import main as bench_main
from analysis.speed.icpe_bench import official_icpe_reference
from data.synthetic import SYNTHETIC_DONTCARE, render_scene


def blocky_labels(seed: int, shape=(37, 53), values=(0, 1, 2, 5, 255)) -> np.ndarray:
    """Random piecewise-constant labels: many components of every size, diagonal contacts."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=(shape[0] // 3 + 1, shape[1] // 4 + 1))
    label = coarse.repeat(3, 0).repeat(4, 1)[: shape[0], : shape[1]]
    speckle = rng.random(shape) < 0.08
    label[speckle] = rng.choice(values, size=int(speckle.sum()))
    return label.astype(np.uint8)


@pytest.mark.parametrize("variant, normalize", [("norm", True), ("no", False)])
def test_official_mode_equals_reference_outputs(reference_dir, coco_sample_dir, variant, normalize):
    expected = np.load(reference_dir / "icpe" / f"coco_stuff_train_label_{variant}.npz")
    assert len(expected.files) == 13
    for stem in expected.files:
        label = np.asarray(Image.open(coco_sample_dir / "train_label" / f"{stem}.png"))
        ours = icpe_map(label, mode="official", normalize=normalize)
        assert ours.dtype == np.float32 and ours.shape == expected[stem].shape
        assert np.abs(ours - expected[stem]).max() <= 1e-6, stem


@pytest.mark.parametrize("labeller", ["cv2", "scipy"])
@pytest.mark.parametrize("normalize", [True, False])
def test_official_mode_equals_plain_per_component_algorithm(labeller, normalize):
    if labeller == "cv2":
        pytest.importorskip("cv2")
    for seed in range(3):
        label = blocky_labels(seed)
        ours = icpe_map(label, mode="official", normalize=normalize)
        reference = official_icpe_reference(label, normalize, labeller)
        assert np.abs(ours - reference).max() <= 1e-6


def test_hand_computed_example_diagonal_contact_is_connected():
    label = np.array([[1, 0, 0],
                      [0, 1, 0],
                      [0, 0, 7]])
    # Class 1: pixels (0,0) and (1,1), 8-connected, centroid (0.5, 0.5), largest |offset| 0.5.
    # Class 7: one pixel, offset 0. Class 0 is not encoded officially.
    d = 0.5 / (0.5 + EPS)
    expected_rows = np.array([[-d, 0, 0], [0, d, 0], [0, 0, 0]], dtype=np.float32)
    official = icpe_map(label, mode="official")
    np.testing.assert_array_equal(official[0], expected_rows)
    np.testing.assert_array_equal(official[1], expected_rows)  # symmetric example
    raw = icpe_map(label, mode="official", normalize=False)
    np.testing.assert_array_equal(raw[0], expected_rows / np.float32(d) * np.float32(0.5))
    # Corrected: class 0 (the other 5 pixels, one component with centroid (0.8, 1.2)) is encoded.
    corrected = icpe_map(label, mode="corrected")
    zeros = label == 0
    rows, cols = np.nonzero(zeros)
    cy, cx = rows.mean(), cols.mean()
    assert np.allclose(corrected[0][zeros], (rows - cy) / (np.abs(rows - cy).max() + EPS), atol=1e-7)
    assert np.allclose(corrected[1][zeros], (cols - cx) / (np.abs(cols - cx).max() + EPS), atol=1e-7)


def test_official_mode_encodes_255_and_skips_0():
    label = blocky_labels(4)
    dist = icpe_map(label, mode="official")
    assert not dist[:, label == 0].any()
    assert np.abs(dist[:, label == 255]).max() > 0.5


def _components(label: np.ndarray):
    for value in np.unique(label):
        comps, count = ndimage.label(label == value, structure=np.ones((3, 3)))
        for number in range(1, count + 1):
            yield value, comps == number


@pytest.mark.parametrize("normalize", [True, False])
def test_corrected_mode_properties(normalize):
    label = render_scene(5, seed=1).label
    dist = icpe_map(label, mode="corrected", normalize=normalize, dontcare=SYNTHETIC_DONTCARE)
    assert (label == SYNTHETIC_DONTCARE).any() and (label == 0).any()
    assert not dist[:, label == SYNTHETIC_DONTCARE].any()
    assert np.abs(dist[:, label == 0]).max() > 0.5
    if normalize:
        assert np.abs(dist).max() < 1
    checked = 0
    for value, mask in _components(label):
        if value == SYNTHETIC_DONTCARE:
            continue
        rows, cols = np.nonzero(mask)
        # Zero mean per component on both axes (the centroid is the origin) ...
        assert abs(dist[0][mask].mean()) < 1e-5 and abs(dist[1][mask].mean()) < 1e-5
        # ... and the raw offsets are the distances to the centroid.
        if not normalize:
            assert np.allclose(dist[0][mask], rows - rows.mean(), atol=1e-5)
            assert np.allclose(dist[1][mask], cols - cols.mean(), atol=1e-5)
        elif mask.sum() > 1 and np.ptp(rows) > 0:
            assert np.isclose(np.abs(dist[0][mask]).max(), 1, atol=1e-3)
        checked += 1
    assert checked >= 8


def test_corrected_mode_without_dontcare_encodes_every_class():
    label = blocky_labels(2)
    dist = icpe_map(label, mode="corrected")
    for value, mask in _components(label):
        if mask.sum() > 1 and np.ptp(np.nonzero(mask)[0]) > 0:
            assert np.abs(dist[0][mask]).max() > 0.5, value


def test_accepts_tensors_and_channel_dim():
    label = blocky_labels(3)
    expected = icpe_map(label, mode="corrected", dontcare=255)
    np.testing.assert_array_equal(icpe_map(torch.from_numpy(label)[None].long(), mode="corrected", dontcare=255),
                                  expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="exact"), r"mode='exact'; expected one of \['official', 'corrected'\]"),
    (dict(mode="official", dontcare=255), r"got dontcare=255, expected None"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        icpe_map(blocky_labels(0), **kwargs)


def test_float_labels_are_rejected():
    with pytest.raises(ValueError, match=r"2-D integer label map.*float32"):
        icpe_map(np.zeros((4, 4), np.float32), mode="corrected")


def _batch() -> torch.Tensor:
    labels = [blocky_labels(seed, (48, 64)) for seed in range(3)]
    labels.append(render_scene(0, size=(48, 64)).label.astype(np.uint8))
    labels.append(np.full((48, 64), 3, np.uint8))  # one component covering the image
    return torch.from_numpy(np.stack(labels)).long()


@pytest.mark.parametrize("mode, dontcare", [("official", None), ("corrected", 255), ("corrected", None)])
@pytest.mark.parametrize("normalize", [True, False])
def test_batched_torch_path_equals_numpy_path(mode, dontcare, normalize):
    labels = _batch()
    ours = icpe_map_batch(labels, mode=mode, normalize=normalize, dontcare=dontcare, backend="torch")
    reference = icpe_map_batch(labels, mode=mode, normalize=normalize, dontcare=dontcare, backend="numpy")
    assert ours.shape == (5, 2, 48, 64) and ours.dtype == torch.float32
    assert torch.equal(ours, reference)
    single = torch.from_numpy(icpe_map(labels[3], mode=mode, normalize=normalize, dontcare=dontcare))
    assert torch.equal(reference[3], single)


def test_batch_accepts_channel_dim_and_rejects_floats():
    labels = _batch()
    assert torch.equal(icpe_map_batch(labels[:, None], mode="official"), icpe_map_batch(labels, mode="official"))
    with pytest.raises(ValueError, match=r"integer labels \[N, H, W\]"):
        icpe_map_batch(labels.float(), mode="official")


@pytest.mark.gpu
def test_batched_torch_path_on_cuda():
    labels = _batch()
    on_gpu = icpe_map_batch(labels.cuda(), mode="corrected", dontcare=255)
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), icpe_map_batch(labels, mode="corrected", dontcare=255), atol=1e-6)


def test_official_flip_quirk_flips_rows_and_keeps_sign():
    dist = icpe_map(blocky_labels(1), mode="official")
    flipped = flip_icpe(torch.from_numpy(dist)[None], mode="official")  # [1, 2, H, W] as officially
    assert torch.equal(flipped[0], torch.from_numpy(dist).flip(1))
    np.testing.assert_array_equal(flip_icpe(dist, mode="official"), dist[:, ::-1, :])


def test_corrected_flip_is_the_icpe_of_the_mirrored_label():
    label = blocky_labels(6)
    dist = icpe_map(label, mode="corrected", dontcare=255)
    mirrored = icpe_map(label[:, ::-1], mode="corrected", dontcare=255)
    assert np.abs(flip_icpe(dist, mode="corrected") - mirrored).max() < 1e-6
    tensor = flip_icpe(torch.from_numpy(dist), mode="corrected")
    assert torch.allclose(tensor, torch.from_numpy(mirrored), atol=1e-6)
    # The official quirk does not give the mirrored map.
    assert np.abs(flip_icpe(dist, mode="official") - mirrored).max() > 0.5


def test_benchmark_cli_writes_csv_and_provenance(tmp_path):
    labels = tmp_path / "data" / "train_label"
    labels.mkdir(parents=True)
    for seed in range(2):
        Image.fromarray(blocky_labels(seed)).save(labels / f"{seed}.png")
    summary = bench_main(["--dataroot", str(tmp_path / "data"), "--repeats", "1", "--labeller", "scipy",
                          "--out", str(tmp_path / "out")])
    assert summary["images"] == 2 and summary["max_abs_diff_norm"] <= 1e-6
    table = (tmp_path / "out" / "icpe_bench.csv").read_text().splitlines()
    assert table[0].startswith("image,height,width,components,fast_s,reference_s,ratio")
    assert len(table) == 3
    assert '"labeller": "scipy"' in (tmp_path / "out" / "meta.json").read_text()


def test_benchmark_names_missing_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no label PNGs found in .*\*_label/"):
        bench_main(["--dataroot", str(tmp_path), "--repeats", "1"])
