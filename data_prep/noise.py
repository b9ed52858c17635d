"""On-the-fly noise for the denoising autoencoder (UMS-Rep Section 4.1.1, Table 2), as
``tf.data`` maps on images in [0, 1].

* Gaussian: ``x + N(0, σ/255)`` for σ on the 0–255 scale (σ ∈ {10, 20, 30, 40, 50});
* Poisson ("μ = σ²"): the pixel value on the 0–255 scale is the mean photon count, so
  ``Poisson(255·x) / 255`` has variance equal to its mean.

Both are clipped back to [0, 1]. ``NOISE_LEVELS`` names the paper's six rows.
"""
from __future__ import annotations

import tensorflow as tf

GAUSSIAN_SIGMAS = (10, 20, 30, 40, 50)
NOISE_LEVELS = tuple(f"gaussian{s}" for s in GAUSSIAN_SIGMAS) + ("poisson",)


def gaussian(x, sigma255: float, seed=None):
    """``seed``: a stateless seed pair for reproducible evaluation; ``None`` draws fresh noise."""
    shape = tf.shape(x)
    n = tf.random.stateless_normal(shape, seed) if seed is not None else tf.random.normal(shape)
    return tf.clip_by_value(x + n * (sigma255 / 255.0), 0.0, 1.0)


def poisson(x, seed=None):
    lam = tf.maximum(x * 255.0, 0.0)
    n = tf.random.stateless_poisson(tf.shape(x), seed, lam) if seed is not None else tf.random.poisson((), lam)
    return tf.clip_by_value(tf.cast(n, tf.float32) / 255.0, 0.0, 1.0)


def apply(x, level: str, seed=None):
    """Noise by name: ``gaussian10`` … ``gaussian50`` or ``poisson``."""
    if level == "poisson":
        return poisson(x, seed)
    if level.startswith("gaussian") and level[8:].isdigit():
        return gaussian(x, float(level[8:]), seed)
    raise ValueError(f"unknown noise level {level!r}; expected one of {NOISE_LEVELS}")


def random_training_noise(x, sigmas=GAUSSIAN_SIGMAS, poisson_share: float = 1 / 6, seed=None):
    """One noise per image for training: a Gaussian with σ drawn from ``sigmas`` or, with
    probability ``poisson_share``, Poisson — so the CDAE learns every row of Table 2.

    ``seed`` (a stateless seed pair, e.g. (run seed, element number)) makes the draw a pure
    function of it: a ``tf.data`` pipeline using it stays checkpointable, so a resumed run sees
    the noise an uninterrupted one would."""
    if seed is None:
        sigma = tf.gather(tf.constant(sigmas, tf.float32), tf.random.uniform((), 0, len(sigmas), tf.int32))
        return tf.cond(tf.random.uniform(()) < poisson_share, lambda: poisson(x),
                       lambda: tf.clip_by_value(x + tf.random.normal(tf.shape(x)) * sigma / 255.0, 0.0, 1.0))
    s_pick, s_kind, s_noise = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    sigma = tf.gather(tf.constant(sigmas, tf.float32),
                      tf.random.stateless_uniform((), s_pick, 0, len(sigmas), tf.int32))
    return tf.cond(tf.random.stateless_uniform((), s_kind) < poisson_share, lambda: poisson(x, s_noise),
                   lambda: gaussian(x, sigma, s_noise))
