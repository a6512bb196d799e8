"""Neighbor2Neighbor's sub-sampler: one pixel per 2-px cell, and a direct neighbour of it in the same cell."""

import numpy as np
import pytest
import torch

from unetkit.data.neighbours import neighbour_pair_indices, take_subimage


@pytest.mark.parametrize("shape", [(8, 10), (9, 7), (4, 6, 8)])
def test_each_cell_gives_a_pixel_and_a_direct_neighbour_inside_the_cell(shape):
    a, b = neighbour_pair_indices(shape, np.random.default_rng(0))
    cells = tuple(s // 2 for s in shape)
    assert a.shape == b.shape == cells and a.dtype == b.dtype == np.int64
    pa, pb = np.unravel_index(a, shape), np.unravel_index(b, shape)
    grid = np.indices(cells)
    for k in range(len(shape)):  # both in cell g: coordinates 2 g or 2 g + 1
        assert np.all(pa[k] // 2 == grid[k]) and np.all(pb[k] // 2 == grid[k])
    steps = sum(np.abs(pa[k] - pb[k]) for k in range(len(shape)))
    assert np.all(steps == 1)  # one axis, one pixel: never the pixel itself, never a diagonal


def test_every_ordered_pair_of_a_2d_cell_occurs_and_the_draw_is_seeded():
    a, b = neighbour_pair_indices((64, 64), np.random.default_rng(1))
    pa, pb = np.unravel_index(a, (64, 64)), np.unravel_index(b, (64, 64))
    within = {(int(y1 % 2), int(x1 % 2), int(y2 % 2), int(x2 % 2)) for y1, x1, y2, x2 in zip(
        pa[0].ravel(), pa[1].ravel(), pb[0].ravel(), pb[1].ravel())}
    assert len(within) == 8  # 4 first pixels x 2 neighbours each
    again = neighbour_pair_indices((64, 64), np.random.default_rng(1))
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])
    other = neighbour_pair_indices((64, 64), np.random.default_rng(2))
    assert not np.array_equal(a, other[0])


def test_an_image_under_two_pixels_is_refused():
    with pytest.raises(ValueError, match="too small"):
        neighbour_pair_indices((1, 8), np.random.default_rng(0))


def test_take_subimage_reads_the_indexed_pixels_of_every_channel():
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.random((2, 3, 6, 8)).astype(np.float32))
    indices = [neighbour_pair_indices((6, 8), rng)[0] for _ in range(2)]
    sub = take_subimage(images, torch.from_numpy(np.stack(indices)))
    assert sub.shape == (2, 3, 3, 4)
    for n in range(2):
        expected = images[n].reshape(3, -1)[:, indices[n].ravel()].reshape(3, 3, 4)
        assert torch.equal(sub[n], expected)
