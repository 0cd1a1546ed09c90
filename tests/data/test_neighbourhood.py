"""Single-class kxk neighbourhoods on hand-made label maps, counted exactly."""
import pytest
import torch

from data.neighbourhood import SPADE_WINDOW, single_class_fraction, single_class_mask, stacked_window
from models.norms import SPADE


def test_a_uniform_map_is_single_class_everywhere_at_every_size():
    label = torch.full((2, 1, 16, 16), 7)
    table = single_class_fraction(label, [4, 8, 16])
    assert table.single_class_fraction.tolist() == [1.0, 1.0, 1.0]
    assert table.resolution.tolist() == ["4x4", "8x8", "16x16"]
    assert table.pixels.tolist() == [32, 128, 512] and set(table.images) == {2}


def test_a_vertical_boundary_spoils_exactly_the_two_columns_beside_it():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[..., 4:] = 1                        # classes meet between columns 3 and 4
    mask = single_class_mask(label, 8, kernel=3)
    expected = torch.ones(1, 8, 8, dtype=torch.bool)
    expected[..., 3:5] = False
    assert torch.equal(mask, expected)
    assert single_class_fraction(label, [8], kernel=3).single_class_fraction.item() == 6 / 8
    # a 5x5 window (the default: SPADE's) also sees the boundary from columns 2 and 5
    assert single_class_fraction(label, [8]).single_class_fraction.item() == 4 / 8
    assert single_class_fraction(label, [8], kernel=1).single_class_fraction.item() == 1.0


def test_one_odd_pixel_spoils_its_3x3_neighbourhood_and_borders_use_real_neighbours_only():
    label = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    label[0, 0, 0, 0] = 3                     # corner: its window is the 2x2 inside the image
    assert single_class_fraction(label, [6], kernel=3).single_class_fraction.item() == (36 - 4) / 36
    label[0, 0, 0, 0], label[0, 0, 3, 3] = 0, 3   # interior: 3x3 window
    assert single_class_fraction(label, [6], kernel=3).single_class_fraction.item() == (36 - 9) / 36


def test_maps_are_nearest_resized_like_the_generator_before_counting():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[:, :, 4:] = 1
    # nearest 8 -> 4 keeps source columns 0, 2, 4, 6: classes 0 0 1 1, so the outer columns are
    # single-class; 8 -> 2 keeps columns 0, 4: classes 0 1, every window mixed
    table = single_class_fraction(label, [4, 2], kernel=3)
    assert table.single_class_fraction.tolist() == [0.5, 0.0]
    # 8 -> 16 duplicates every column: 16 columns, the 2 beside the boundary are mixed
    assert single_class_fraction(label, [(16, 16)], kernel=3).single_class_fraction.item() == 14 / 16


def test_batches_are_pooled_by_pixels():
    uniform = torch.zeros(3, 1, 8, 8, dtype=torch.long)
    split = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    split[..., 4:] = 1
    pooled = single_class_fraction(iter([uniform, split]), [8], kernel=3)
    assert pooled.single_class_fraction.item() == (3 * 64 + 48) / (4 * 64)
    assert pooled.images.item() == 4


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match="integer class ids"):
        single_class_fraction(torch.zeros(1, 3, 8, 8), [8])
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        single_class_fraction(torch.zeros(1, 2, 8, 8, dtype=torch.long), [8])
    with pytest.raises(ValueError, match="odd"):
        single_class_fraction(torch.zeros(1, 8, 8, dtype=torch.long), [8], kernel=2)
    with pytest.raises(ValueError, match="sizes is empty"):
        single_class_fraction(torch.zeros(1, 8, 8, dtype=torch.long), [])


def test_the_default_window_is_what_one_spade_gamma_value_depends_on():
    assert stacked_window(3) == SPADE_WINDOW == 5 and stacked_window(1) == 1 and stacked_window(3, 3) == 7
    torch.manual_seed(0)
    layer = SPADE(channels=4, semantic_nc=3, hidden=8).double()
    centre = (7, 7)

    def gamma_at_centre(label):
        onehot = torch.nn.functional.one_hot(label, 3).permute(0, 3, 1, 2).double()
        return layer.mlp_gamma(layer.mlp_shared(onehot))[0, :, centre[0], centre[1]]

    label = torch.zeros(1, 15, 15, dtype=torch.long)
    base = gamma_at_centre(label)
    inside, outside = label.clone(), label.clone()
    inside[0, 7 + 2, 7 - 2] = 1           # a corner of the 5x5 window
    outside[0, 7 + 3, 7] = 1              # just outside it
    assert (gamma_at_centre(inside) - base).abs().max() > 1e-3
    assert torch.equal(gamma_at_centre(outside), base)
    # and the table counts that corner: the centre is no longer single-class
    assert not single_class_mask(inside, 15)[0, 7, 7] and single_class_mask(outside, 15)[0, 7, 7]
