"""Frechet distance against pytorch-fid and analytic facts; streaming statistics; Inception loading."""
import json
import logging

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from torch import nn

from analysis.quality import metrics



def random_stats(dims, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dims, dims))
    return rng.normal(size=dims), a @ a.T / dims + 0.1 * np.eye(dims)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")
def test_frechet_distance_equals_pytorch_fid():
    (mu1, s1), (mu2, s2) = random_stats(16, 0), random_stats(16, 1)
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-10)


def test_equal_covariances_give_squared_mean_distance():
    mu1, sigma = random_stats(8, 2)
    mu2 = mu1 + np.arange(8) * 0.5
    assert metrics.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)


def test_identical_statistics_give_zero():
    mu, sigma = random_stats(8, 3)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_rejects_mismatched_shapes():
    (mu1, s1), (mu2, s2) = random_stats(4, 0), random_stats(5, 1)
    with pytest.raises(ValueError, match="do not match"):
        metrics.frechet_distance(mu1, s1, mu2, s2)


def test_streaming_statistics_match_numpy_and_round_trip(tmp_path):
    features = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    stats = metrics.ActivationStats()
    for chunk in np.array_split(features, 4):
        stats.update(torch.from_numpy(chunk))
    mu, sigma = stats.mean_cov()
    assert stats.count == 50 and mu.dtype == np.float64
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), atol=1e-12)

    path = stats.save(tmp_path / "ref.npz", split="val", resize="none")
    loaded = metrics.ActivationStats.load(path)
    assert loaded.count == 50
    np.testing.assert_allclose(loaded.mean_cov()[1], sigma, atol=1e-12)
    assert json.loads(path.with_suffix(".json").read_text()) == {"count": 50, "dims": 6, "split": "val", "resize": "none"}


class TinyExtractor(nn.Module):
    """Stands in for Inception: conv + global pool -> 5 features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")
def test_fid_pipeline_with_mocked_extractor(tmp_path, caplog):
    real, fake = torch.rand(40, 3, 16, 16) * 2 - 1, torch.rand(40, 3, 16, 16) * 1.6 - 0.6
    extractor = TinyExtractor()
    calls = []

    def compute():
        calls.append(1)
        return metrics.activation_statistics(real.split(8), extractor)

    provenance = dict(split="val", count=40, resize="none", extractor="TinyExtractor")
    ref = metrics.cached_reference_statistics(tmp_path, compute, **provenance)
    again = metrics.cached_reference_statistics(tmp_path, compute, **provenance)
    assert len(calls) == 1 and again.count == 40
    saved = json.loads(next(tmp_path.glob("reference_*.json")).read_text())
    assert saved["split"] == "val" and saved["count"] == 40 and saved["resize"] == "none"

    gen = metrics.activation_statistics(fake.split(16), extractor)
    with caplog.at_level(logging.WARNING, logger="analysis.quality.metrics"):
        fid = metrics.stats_distance(gen, ref)
    assert "40 samples" in caplog.text

    with torch.no_grad():
        a, b = extractor(fake).double().numpy(), extractor(real).double().numpy()
    expected = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid == pytest.approx(expected, rel=1e-8)
    assert fid > 0


def test_missing_weights_error_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(metrics.InceptionWeightsMissing) as info:
        metrics.find_inception_weights()
    message = str(info.value)
    assert metrics.FID_WEIGHTS_FILE in message and metrics.FID_WEIGHTS_URL in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "--inception-weights" in message
    with pytest.raises(metrics.InceptionWeightsMissing, match="elsewhere"):
        metrics.find_inception_weights(tmp_path / "elsewhere" / "w.pth")


def test_inception_loads_from_file_without_download_and_matches_pytorch_fid(tmp_path, monkeypatch):
    from pytorch_fid import inception as fid

    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.05 if v.is_floating_point() else v
             for k, v in metrics.fid_inception_network().state_dict().items()}
    state = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    weights = tmp_path / metrics.FID_WEIGHTS_FILE
    torch.save(state, weights)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download the Inception weights")

    monkeypatch.setattr(fid, "load_state_dict_from_url", no_download)
    ours = metrics.load_fid_inception(tmp_path)          # a folder holding the file works too
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    features = ours(images)
    assert features.shape == (2, 2048)

    monkeypatch.setattr(fid, "load_state_dict_from_url", lambda *a, **k: state)
    reference = fid.InceptionV3([3]).eval()             # resize + [0, 1] input, as pytorch-fid runs it
    with torch.no_grad():
        expected = reference((images + 1) / 2)[0].flatten(1)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)


def test_clean_resize_when_cleanfid_is_installed():
    pytest.importorskip("cleanfid", reason="optional clean-fid package not installed")
    out = metrics.clean_resize(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 299, 299)
