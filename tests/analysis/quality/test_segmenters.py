"""Confusion-matrix scores, class maps, TorchScript segmenters and the proxy segmenter."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.quality import segmenters
from analysis.quality.segmenters import IGNORE_INDEX



def test_confusion_matrix_scores_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    cm = segmenters.confusion_matrix(pred, target, num_classes=3)
    # rows = target, columns = prediction; the ignored pixel (predicted 2) is not counted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    scores = segmenters.segmentation_scores(cm)
    assert scores["accuracy"] == pytest.approx(4 / 7)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (3 + 3 - 2) = 1/2; class 2: 1 / (2 + 2 - 1) = 1/3
    assert scores["iou_per_class"] == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    assert scores["miou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert scores["pixels"] == 7


def test_classes_absent_from_target_and_prediction_do_not_count():
    cm = segmenters.confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), num_classes=4)
    scores = segmenters.segmentation_scores(cm)
    assert scores["miou"] == 1.0 and np.isnan(scores["iou_per_class"][3])


def test_out_of_range_targets_are_an_error():
    with pytest.raises(ValueError, match=r"outside \[0, 2\]"):
        segmenters.confusion_matrix(torch.tensor([0]), torch.tensor([5]), num_classes=3)


def test_meter_accumulates_batches():
    meter = segmenters.SegmentationMeter()
    logits = F.one_hot(torch.tensor([[[0, 1], [1, 1]]]), 2).permute(0, 3, 1, 2).float()
    meter.update(logits, torch.tensor([[[0, 1], [0, 1]]]))
    meter.update(logits, torch.tensor([[[0, 1], [1, 1]]]))
    assert meter.scores()["accuracy"] == pytest.approx(7 / 8)


def test_map_labels_with_class_map_and_dontcare():
    label = torch.tensor([[[[7, 8, 0, 26, 35]]]])        # [N, 1, H, W] Cityscapes label ids
    mapped = segmenters.map_labels(label, 19, segmenters.resolve_class_map("cityscapes-train-ids"))
    assert mapped.tolist() == [[[0, 1, IGNORE_INDEX, 13, IGNORE_INDEX]]]   # [N, H, W]
    # without a map, ids the segmenter does not predict (dontcare = label_nc) are ignored
    assert segmenters.map_labels(torch.tensor([[0, 3, 8]]), 8).tolist() == [[0, 3, IGNORE_INDEX]]


def test_class_map_from_json(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"1": 0, "2": 1}')
    assert segmenters.resolve_class_map(str(path)) == {1: 0, 2: 1}
    with pytest.raises(ValueError, match="cityscapes-train-ids"):
        segmenters.resolve_class_map("no-such-map")


class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_torchscript_segmenter_round_trip(tmp_path):
    net = TinySeg().eval()
    path = tmp_path / "seg.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    seg = segmenters.load_torchscript_segmenter(path, class_map={5: 1, 6: 2}, input_norm="zero-one")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    logits = seg(images)
    expected = F.interpolate(net((images + 1) / 2), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected.detach())
    assert not seg.is_proxy and "seg.pt" in seg.description
    target = seg.target(torch.tensor([[[5, 6, 0]]]), logits.shape[1])
    assert target.tolist() == [[[1, 2, IGNORE_INDEX]]]


def test_torchscript_segmenter_errors_explain_the_contract(tmp_path):
    with pytest.raises(FileNotFoundError, match="TorchScript module"):
        segmenters.load_torchscript_segmenter(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a TorchScript module"):
        segmenters.load_torchscript_segmenter(bad)


def test_paper_segmenters_are_documented():
    for preset in ("cityscapes", "ade20k", "coco-stuff"):
        spec = segmenters.PAPER_SEGMENTERS[preset]
        assert spec.class_map in segmenters.CLASS_MAPS and spec.input_norm in segmenters.INPUT_NORMS


def toy_scenes(count, seed, size=24, classes=4):
    """Rectangles of class colours (fixed across seeds) on class 0, with pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    colors = torch.rand(classes, 3, generator=torch.Generator().manual_seed(99)) * 2 - 1
    labels = torch.zeros(count, 1, size, size, dtype=torch.long)
    for i in range(count):
        for _ in range(3):
            c = int(torch.randint(1, classes, (1,), generator=gen))
            y, x = torch.randint(size - 8, (2,), generator=gen).tolist()
            h, w = torch.randint(5, size // 2, (2,), generator=gen).tolist()
            labels[i, 0, y:y + h, x:x + w] = c
    labels[:, :, :2] = classes                            # a dontcare strip, ignored
    images = colors[labels[:, 0].clamp(max=classes - 1)].permute(0, 3, 1, 2)
    return (images + 0.3 * torch.randn(images.shape, generator=gen)).clamp(-1, 1), labels


def test_proxy_segmenter_learns_toy_scenes():
    images, labels = toy_scenes(32, seed=0)
    net = segmenters.train_proxy_segmenter(images, labels, num_classes=4, steps=50, progress=False)
    assert net.is_proxy and "proxy" in net.description and "50 steps" in net.description
    test_images, test_labels = toy_scenes(16, seed=1)
    meter = segmenters.SegmentationMeter()
    with torch.no_grad():
        meter.update(net(test_images), net.target(test_labels))
        features = net.features(test_images)
    scores = meter.scores()
    assert scores["accuracy"] > 0.8, scores       # chance is 0.25, always-background ~0.6
    assert scores["miou"] > 0.5, scores
    assert features.shape == (16, net.classifier.in_channels)


def test_proxy_training_fits_a_time_budget():
    images, labels = toy_scenes(8, seed=0, size=16)
    net = segmenters.train_proxy_segmenter(images, labels, num_classes=4, steps=60, max_seconds=1e-3,
                                           progress=False)
    assert "15 steps" in net.description       # cut to the floor of a quarter of the planned steps
