"""The papers' three segmenters: exact against their reference code, strict about weight files,
and each evaluated with its own protocol."""
import pytest
import torch
import torch.nn.functional as F

from analysis.quality import segmenters
from analysis.quality.paper_segmenters import protocol
from analysis.quality.paper_segmenters.release import SegmenterWeightsError
from analysis.quality.segmenter_io import IGNORE_INDEX, normalize
from analysis.quality.segmenter_names import PAPER_SEGMENTER_NAMES, paper_segmenter_name

from tests.analysis.quality.paper_seeded import save_released, seeded_case, seeded_state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """{name: (path in the released layout, seeded state)}, written once for the module."""
    root = tmp_path_factory.mktemp("released")
    out = {}
    for name in PAPER_SEGMENTER_NAMES:
        state = seeded_state(name)
        out[name] = (save_released(name, state, root / name), state)
    return out


@pytest.fixture(scope="module")
def loaded(released):
    return {name: segmenters.load_paper_segmenter(name, path) for name, (path, _) in released.items()}


# --- exactness --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_SEGMENTER_NAMES)
def test_released_file_reproduces_the_reference_logits(loaded, name):
    """fp32 sums reorder with the thread count and CPU (the reference at 1 vs 2 threads differs by
    ~1e-6 of the largest logit), hence 1e-5 of the largest logit; a wrong layer is off by O(1)."""
    x, expected = seeded_case(name)
    with torch.no_grad():
        logits = loaded[name].network.logits(x)
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max() <= 1e-5 * expected.abs().max()


# --- weight files ------------------------------------------------------------------------------------

def test_a_file_of_another_network_names_the_file_the_keys_and_the_expected_file(released):
    drn_file = released["drn-d-105"][0]
    with pytest.raises(SegmenterWeightsError) as info:
        segmenters.load_paper_segmenter("deeplabv2", drn_file)
    message = str(info.value)
    assert "\n" not in message and str(drn_file) in message
    assert "missing (base.layer1.conv1.conv.weight" in message and "unexpected (base.0.0.weight" in message
    assert "looks like drn-d-105 weights" in message
    assert "deeplabv2_resnet101_msc-cocostuff164k-100000.pth" in message


def test_a_missing_or_misshaped_key_is_listed(released, tmp_path):
    path, state = released["drn-d-105"]
    broken = {k: v for k, v in state.items() if k != "seg.bias"}
    broken["up.weight"] = torch.zeros(19, 1, 8, 8)
    torch.save(broken, tmp_path / "drn.pth")
    with pytest.raises(SegmenterWeightsError, match=r"1 missing \(seg.bias\); 1 mis-shaped \(up.weight "
                                                    r"\(19, 1, 8, 8\) instead of \(19, 1, 16, 16\)\)"):
        segmenters.load_paper_segmenter("drn-d-105", tmp_path / "drn.pth")


def test_wrapped_files_and_files_without_batch_counters_load(released, tmp_path):
    """A re-saved copy ({'state_dict': ...}, DataParallel's 'module.' prefix) and a pre-0.4.1 file
    without num_batches_tracked hold the same weights."""
    _, state = released["drn-d-105"]
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    seg = segmenters.load_paper_segmenter("drn-d-105", tmp_path / "wrapped.pth")
    assert torch.equal(seg.network.state_dict()["seg.weight"], state["seg.weight"])


def test_upernet_release_folder_needs_both_files(released, tmp_path):
    folder, _ = released["upernet-101"]
    (tmp_path / "encoder_epoch_50.pth").write_bytes((folder / "encoder_epoch_50.pth").read_bytes())
    with pytest.raises(SegmenterWeightsError, match="no decoder_epoch_50.pth in"):
        segmenters.load_paper_segmenter("upernet-101", tmp_path)
    # a file inside the release folder names the folder
    assert segmenters.load_paper_segmenter("upernet-101", folder / "decoder_epoch_50.pth").name == "upernet-101"


def test_pickled_code_is_refused_without_running_it(tmp_path):
    torch.save({"net": torch.nn.Linear(1, 1)}, tmp_path / "model.pth")
    with pytest.raises(SegmenterWeightsError, match="not a plain state_dict"):
        segmenters.load_paper_segmenter("deeplabv2", tmp_path / "model.pth")


# --- protocols --------------------------------------------------------------------------------------

def test_names_from_the_preset():
    assert paper_segmenter_name("paper", "cityscapes") == "drn-d-105"
    assert paper_segmenter_name("paper", "ade20k-outdoor") == "upernet-101"
    assert paper_segmenter_name("deeplabv2", "synthetic") == "deeplabv2"
    with pytest.raises(ValueError, match="no preset 'synthetic'"):
        paper_segmenter_name("paper", "synthetic")


def test_input_normalisations_by_hand():
    pixel = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)          # RGB (255, 0, 127.5)
    assert normalize(pixel, "caffe-bgr").flatten().tolist() == pytest.approx(
        [127.5 - 104.008, 0 - 116.669, 255 - 122.675])              # BGR minus the Caffe BGR mean
    assert normalize(pixel, "cityscapes-drn").flatten().tolist() == pytest.approx(
        [(1 - 0.29010095) / 0.18295405, (0 - 0.32808145) / 0.18656561, (0.5 - 0.28696394) / 0.18447509])


def test_upernet_test_sizes_follow_the_reference_rule():
    # short side 300 of a 256x256 image: 300x300, rounded up to multiples of 32
    assert protocol.upernet_input_size(256, 256, 300) == (320, 320)
    # 256x512 at short side 600: the long side is capped at 1000 (scale 1.953125): 500x1000 -> 512x1024
    assert protocol.upernet_input_size(256, 512, 600) == (512, 1024)
    assert protocol.upernet_input_size(256, 256, 525) == (544, 544)


def test_scores_at_the_image_size_with_the_reference_prediction(loaded):
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    drn, deeplab = loaded["drn-d-105"], loaded["deeplabv2"]
    with torch.no_grad():
        scores = drn(images)
        up = drn.network.up(drn.network.logits(normalize(images, "cityscapes-drn")))
        assert scores.shape == (2, 19, 48, 64) and torch.equal(scores, up)
        logits = deeplab.network.logits(normalize(images, "caffe-bgr"))
        assert torch.equal(deeplab(images), F.interpolate(logits, size=(48, 64), mode="bilinear",
                                                          align_corners=False))
    assert drn.description == "DRN-D-105, released weights, single scale 64x48"
    assert deeplab.description == "DeepLabV2, released weights, MSC (scales 1, 0.5, 0.75) at 64x48"


def test_upernet_averages_the_softmax_over_its_sizes(released):
    path, _ = released["upernet-101"]
    seg = segmenters.load_paper_segmenter("upernet-101", path, img_sizes=(32, 64))
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x = normalize(images, "imagenet")
    def upsampled_softmax(logits):   # the reference's decoder at eval: upsample, then softmax
        return F.softmax(F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False), 1)

    with torch.no_grad():
        small = upsampled_softmax(seg.network.logits(x))                         # short side 32: as given
        large = upsampled_softmax(seg.network.logits(F.interpolate(x, size=(64, 64), mode="bilinear",
                                                                   align_corners=False)))
        scores = seg(images)
    # the protocol resizes with antialias (PIL-like when shrinking); upscaling it equals plain bilinear to
    # ~5e-7, which the ResNet carries to ~2e-6 on the probabilities
    assert (scores - (small + large) / 2).abs().max() < 1e-5
    assert scores.sum(1).sub(1).abs().max() < 1e-5
    assert seg.description == "UPerNet-101, released weights, 2 scales (short side 32, 64) of 32x32"


def test_targets_use_each_datasets_mapping(loaded):
    assert loaded["drn-d-105"].target(torch.tensor([[[7, 26, 0, 33]]])).tolist() == [[[0, 13, IGNORE_INDEX, 18]]]
    assert loaded["deeplabv2"].target(torch.tensor([[[0, 181, 182, 255]]])).tolist() == \
        [[[0, 181, IGNORE_INDEX, IGNORE_INDEX]]]
    assert loaded["upernet-101"].target(torch.tensor([[[0, 149, 150]]])).tolist() == [[[0, 149, IGNORE_INDEX]]]


def test_meta_record_states_the_protocol(loaded):
    record = loaded["upernet-101"].record()
    assert record["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert record["img_sizes"] == [300, 375, 450, 525, 600]
    assert any("unpublished" not in u and "imgSizes" in u for u in record["unpublished"])
    assert loaded["deeplabv2"].record()["normalization"]["channels"] == "BGR in [0, 255]"
