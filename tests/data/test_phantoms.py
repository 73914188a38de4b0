"""Phantoms: deterministic per (seed, index), in range, with structure beyond flat ellipses."""

from __future__ import annotations

import numpy as np

from invdiff.data.phantoms import SPLIT_SEEDS, make_phantoms


def test_image_k_depends_on_seed_and_k_only():
    a, la = make_phantoms(5, 32, seed=3)
    b, lb = make_phantoms(2, 32, seed=3)
    np.testing.assert_array_equal(a[:2], b)
    np.testing.assert_array_equal(la[:2], lb)
    c, _ = make_phantoms(2, 32, seed=4)
    assert not np.allclose(a[:2], c)


def test_range_shape_and_labels():
    x, labels = make_phantoms(64, 48, seed=0, lesion_fraction=0.5)
    assert x.shape == (64, 1, 48, 48) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(labels)) <= {0, 1}
    assert 16 <= labels.sum() <= 48  # Binomial(64, 0.5): +-4 standard deviations
    none, l0 = make_phantoms(8, 48, seed=0, lesion_fraction=0.0)
    assert l0.sum() == 0
    # The lesion is the only difference when a phantom gains one.
    _, l1 = make_phantoms(8, 48, seed=0, lesion_fraction=1.0)
    assert l1.sum() == 8


def test_not_piecewise_constant():
    # Smooth intensity variation inside tissue: many distinct grey levels and non-zero small-scale
    # gradients almost everywhere inside the body, unlike a piecewise-constant ellipse phantom.
    x, _ = make_phantoms(4, 64, seed=1)
    for img in x[:, 0]:
        body = img > 0.05
        assert len(np.unique(np.round(img[body], 4))) > 200
        gx = np.abs(np.diff(img, axis=1))[body[:, 1:] & body[:, :-1]]
        assert (gx > 1e-4).mean() > 0.5


def test_split_seeds_are_fixed():
    assert SPLIT_SEEDS == {"train": 0, "val": 1, "test": 2}


def test_lesion_twins_differ_only_in_the_lesion():
    from invdiff.data.phantoms import lesion_twins

    present, absent, masks = lesion_twins(6, 32, seed=0)
    assert present.shape == absent.shape == masks.shape == (6, 1, 32, 32)
    assert masks.dtype == bool and masks.any(axis=(1, 2, 3)).all()
    diff = np.abs(present - absent)
    assert diff[~masks].max() <= 0.02 and diff[masks].min() > 0.02
    # The lesion twins are the lesion-bearing phantoms of the standard split, in order.
    images, labels = make_phantoms(20, 32, seed=0)
    lesioned = images[labels == 1]
    np.testing.assert_array_equal(present[:3], lesioned[:3])
