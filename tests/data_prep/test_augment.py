"""The fine-tuning augmentation: one random affine per element, alike for image and mask."""
import numpy as np
import tensorflow as tf

from data_prep.augment import Affine


def _square(side=32):
    img = np.zeros((side, side, 1), np.float32)
    img[10:20, 6:16] = 1.0
    return img


def _seed(i):
    return tf.constant([0, i], tf.int64)


def test_zero_ranges_are_the_identity():
    img = _square()
    out, t = Affine(0, 0, 0)(tf.constant(img), {"mask": tf.constant(img)}, _seed(1))
    assert np.array_equal(out.numpy(), img) and np.array_equal(t["mask"].numpy(), img)


def test_image_and_mask_move_together_and_the_mask_stays_binary():
    img = _square()
    for i in range(5):
        out, t = Affine(rotate=10, zoom=0.1, shift=0.1)(tf.constant(img), {"mask": tf.constant(img), "label": 1},
                                                       _seed(i))
        mask = t["mask"].numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0} and t["label"] == 1
        # the bilinear image, thresholded, is the nearest-neighbour mask up to its edge pixels
        assert np.mean((out.numpy() > 0.5) != (mask > 0.5)) < 0.03
        assert not np.array_equal(mask, img)  # something moved


def test_the_draw_depends_on_the_seed_only():
    img = tf.constant(_square())
    a = Affine()(img, {}, _seed(3))[0].numpy()
    assert np.array_equal(a, Affine()(img, {}, _seed(3))[0].numpy())
    assert not np.array_equal(a, Affine()(img, {}, _seed(4))[0].numpy())


def test_shift_moves_the_centre_of_mass_by_at_most_its_range():
    img = _square(64)
    cy, cx = np.argwhere(img[..., 0] > 0.5).mean(0)
    for i in range(10):
        out = Affine(rotate=0, zoom=0, shift=0.1)(tf.constant(img), {}, _seed(i))[0].numpy()
        y, x = np.argwhere(out[..., 0] > 0.5).mean(0)
        assert abs(y - cy) <= 0.1 * 64 + 1 and abs(x - cx) <= 0.1 * 64 + 1
