"""Task losses (UMS-Rep Eq. 1; the saliency loss of another paper's package). Each returns one value per example, so a
training loop can average over the global batch under ``tf.distribute``
(``tf.nn.compute_average_loss``).

* :func:`dice_loss` — ``1 − 2Σty / (Σt + Σy)`` per image;
* :func:`bce_dice` — ``0.5·BCE + 0.5·Dice`` (UMS-Rep Eq. 1), the segmentation loss;
* :func:`categorical_crossentropy` — Keras' CCE, for classification heads;
* :func:`kld` — ``KL(ȳ ‖ y) = Σ ȳ log(ȳ / y)`` over all pixels of two maps that each sum to 1,
  with the MIT saliency benchmark's ε = 2.2204e-16 (Keras' ``KLDivergence`` clips along the last
  axis only, which is wrong for (H, W, 1) maps — hence our own two lines);
* :func:`mse` — per-image mean squared error, the CDAE's reconstruction loss.

Every loss computes in float32 (predictions are cast), whatever the model's dtype policy.
"""
from __future__ import annotations

import keras
from keras import ops

EPS = 2.2204e-16  # MIT/Tuebingen saliency benchmark


def _flat(x):
    return ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))


def dice_loss(y_true, y_pred, smooth: float = 1.0):
    """``1 − (2Σty + s) / (Σt + Σy + s)`` per image; ``s`` keeps empty masks finite."""
    t, y = _flat(y_true), _flat(y_pred)
    return 1.0 - (2.0 * ops.sum(t * y, axis=1) + smooth) / (ops.sum(t, axis=1) + ops.sum(y, axis=1) + smooth)


def bce_dice(y_true, y_pred):
    """UMS-Rep Eq. 1: ``0.5·BCE + 0.5·Dice`` per image."""
    t, y = _flat(y_true), _flat(y_pred)
    bce = ops.mean(keras.losses.binary_crossentropy(t[..., None], y[..., None]), axis=1)
    return 0.5 * bce + 0.5 * dice_loss(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred):
    return keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))


def kld(y_true, y_pred):
    """``Σ ȳ log(ε + ȳ / (y + ε))`` per map (MIT benchmark form)."""
    t, y = _flat(y_true), _flat(y_pred)
    return ops.sum(t * ops.log(EPS + t / (y + EPS)), axis=1)


def mse(y_true, y_pred):
    return ops.mean(ops.square(_flat(y_true) - _flat(y_pred)), axis=1)


LOSSES = {"bce_dice": bce_dice, "cce": categorical_crossentropy, "kld": kld, "mse": mse}


def get(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
