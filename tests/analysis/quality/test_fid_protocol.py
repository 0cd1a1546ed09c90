"""Official FID protocol: train_mu_si files, official resize, computed-and-cached training statistics."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.quality import fid_protocol
from analysis.quality import metrics


def _write_stats(folder, dims=fid_protocol.FEATURE_DIMS, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dims, 8))
    mu, sigma = rng.standard_normal(dims), a @ a.T / 8 + np.eye(dims)
    folder.mkdir(parents=True)
    np.save(folder / "m.npy", mu.astype(np.float32))
    np.save(folder / "s.npy", sigma.astype(np.float32))
    return mu.astype(np.float32), sigma.astype(np.float32)


def test_official_resize_sizes_and_rounds_to_8_bits():
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    out = fid_protocol.official_resize(images, fid_protocol.official_size("cityscapes"))
    assert out.shape == (2, 3, 256, 512)
    levels = (out + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and out.min() >= -1 and out.max() <= 1
    same = fid_protocol.official_resize(images, (64, 64))
    assert torch.equal(fid_protocol.official_resize(same, None), same)   # idempotent once rounded
    assert (same - images).abs().max() <= 1 / 127.5
    assert fid_protocol.official_size("synthetic") is None


@pytest.mark.parametrize("given", ["repo", "train_mu_si", "dataset"])
def test_official_statistics_found_from_any_level_and_loaded(tmp_path, given):
    folder = tmp_path / "datasets" / "train_mu_si" / "ade20koutdoor"
    mu, sigma = _write_stats(folder)
    root = {"repo": tmp_path, "train_mu_si": tmp_path / "datasets" / "train_mu_si", "dataset": folder}[given]
    m_path, s_path = fid_protocol.find_official_statistics(root, "ade20k-outdoor")
    assert (m_path, s_path) == (folder / "m.npy", folder / "s.npy")
    stats = fid_protocol.load_official_statistics(m_path, s_path, count=5000)
    got_mu, got_sigma = stats.mean_cov()
    assert stats.count == 5000
    np.testing.assert_allclose(got_mu, mu, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_sigma, sigma, rtol=1e-9, atol=1e-6)


def test_missing_or_malformed_official_statistics_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"m\.npy and s\.npy .*datasets/train_mu_si/coco/"):
        fid_protocol.find_official_statistics(tmp_path, "coco-stuff")
    _write_stats(tmp_path / "cityscapes", dims=16)
    with pytest.raises(ValueError, match=r"shapes \(16,\) / \(16, 16\); expected \(2048,\)"):
        fid_protocol.load_official_statistics(tmp_path / "cityscapes" / "m.npy", tmp_path / "cityscapes" / "s.npy", 10)


def test_official_reference_from_files_records_its_source(tmp_path):
    mu, _ = _write_stats(tmp_path / "train_mu_si" / "ade20k")
    ref = fid_protocol.official_reference("ade20k", inception=None, device="cpu", cache_dir=tmp_path / "cache",
                                          image_size=(256, 256), stats_path=tmp_path / "train_mu_si")
    np.testing.assert_allclose(ref.statistics.mean_cov()[0], mu, atol=1e-9)
    assert ref.statistics.count == fid_protocol.OFFICIAL_TRAIN_IMAGES["ade20k"]
    assert ref.provenance["protocol"] == "official"
    assert str(tmp_path / "train_mu_si" / "ade20k") in ref.provenance["reference"]
    assert "256x256" in ref.provenance["resize"] and "official protocol" in ref.note
    assert ref.transform(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 256, 256)


def _features(images):
    return F.adaptive_avg_pool2d(images, 4).flatten(1)   # 48-d stand-in for Inception


def test_computed_training_statistics_are_cached(tmp_path):
    calls = []

    def extractor(images):
        calls.append(len(images))
        return _features(images)

    kwargs = dict(device="cpu", cache_dir=tmp_path / "cache", image_size=(64, 64), train_images=6, batch_size=4,
                  dataset="synthetic scenes")
    first = fid_protocol.official_reference("synthetic", extractor, **kwargs)
    assert calls == [4, 2]
    batches = fid_protocol.train_image_batches("synthetic", None, size=(64, 64), count=6, batch_size=6)
    expected = metrics.activation_statistics(batches, _features, transform=first.transform)
    np.testing.assert_allclose(first.statistics.mean_cov()[1], expected.mean_cov()[1], atol=1e-10)
    assert "computed from 6 training images" in first.provenance["reference"]
    assert "own size 64x64" in first.provenance["resize"]
    (meta,) = (tmp_path / "cache").glob("reference_*.json")
    assert json.loads(meta.read_text())["split"] == "train"

    second = fid_protocol.official_reference("synthetic", extractor, **kwargs)
    assert calls == [4, 2]   # read from the cache
    np.testing.assert_allclose(second.statistics.mean_cov()[0], first.statistics.mean_cov()[0], atol=1e-12)
    fid_protocol.official_reference("synthetic", extractor, **{**kwargs, "train_images": 4})
    assert calls == [4, 2, 4]   # another definition: recomputed
