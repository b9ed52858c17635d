"""Resize, letterbox and mean normalisation."""
import cv2
import numpy as np
import pytest

from data_prep.transforms import Letterbox, MeanNormalizer, letterbox, resize, resize_mask


def test_resize_is_opencv_bicubic_clipped():
    rng = np.random.default_rng(0)
    img = rng.random((50, 70)).astype(np.float32)
    out = resize(img, (32, 40))
    assert out.shape == (32, 40)
    ref = np.clip(cv2.resize(img, (40, 32), interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_allclose(out, ref)


def test_resize_mask_stays_binary():
    m = np.zeros((100, 100), np.uint8)
    m[20:60, 30:90] = 1
    small = resize_mask(m, (25, 25))
    assert set(np.unique(small)) == {0, 1}
    assert small.mean() == pytest.approx(m.mean(), abs=0.02)


def test_letterbox_keeps_aspect_and_centres():
    img = np.ones((300, 200), np.float32)
    out, lb = letterbox(img, (640, 416))
    assert out.shape == (640, 416)
    rows = np.nonzero(out.any(axis=1))[0]
    cols = np.nonzero(out.any(axis=0))[0]
    assert (cols.min(), cols.max()) == (0, 415)  # width fills, height is padded
    assert (rows.max() - rows.min() + 1) / 416 == pytest.approx(300 / 200, abs=0.01)
    assert abs(rows.min() - (640 - rows.max() - 1)) <= 1


def test_letterbox_points_follow_the_pixels():
    img = np.zeros((90, 160), np.float32)
    img[30, 100] = 1.0
    lb = Letterbox.fit(img.shape, (128, 128))
    out = lb.apply(img, "bilinear")
    y, x = np.unravel_index(np.argmax(out), out.shape)
    px, py = lb.points(100, 30)
    assert abs(px - x) <= 1 and abs(py - y) <= 1


def test_mean_normalizer_matches_numpy():
    rng = np.random.default_rng(1)
    imgs = [rng.random((8, 8 + i)) for i in range(5)]
    norm = MeanNormalizer.fit(imgs)
    allpix = np.concatenate([i.ravel() for i in imgs])
    assert norm.mean == pytest.approx(allpix.mean()) and norm.std == pytest.approx(allpix.std())
    assert MeanNormalizer.from_json(norm.to_json()) == norm
    assert norm(allpix).mean() == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="no training images"):
        MeanNormalizer.fit([])
