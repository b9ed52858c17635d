"""Task heads shared by UMS-Rep and another paper's package (UMS-Rep Figures 6 and 8).

Each head is a function ``head(features, ..., name) -> KerasTensor`` that adds named layers to a
Functional graph, so one backbone can carry many heads and ``keras.Model(inputs, {task: head})``
shares the backbone's weights between tasks.

* :func:`classification_head` — GAP → FC(ReLU) → Dropout → FC softmax; given several feature
  maps (e.g. a UNet's bottleneck and last decoder stage) each is pooled and the vectors concatenated;
* :func:`segmentation_head` — the decoder symmetric to the encoder, then a 1-channel sigmoid;
* :func:`saliency_head` — 3×3 conv + BN + ReLU → 1×1 conv → softmax over all pixels
  (:class:`SpatialSoftmax`), so each map is a distribution that sums to 1.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ums_rep.layers import BatchNorm, decoder


@keras.saving.register_keras_serializable(package="ums_rep")
class SpatialSoftmax(layers.Layer):
    """Softmax over all pixels of a (B, H, W, 1) map: a saliency output."""

    def call(self, x):
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], -1))
        return ops.reshape(ops.softmax(flat, axis=-1), shape)

    def compute_output_shape(self, input_shape):
        return input_shape


def classification_head(features, n_classes: int, name: str, units: int = 256, dropout: float = 0.5):
    """GAP → FC(``units``, ReLU) → Dropout(``dropout``) → FC(``n_classes``) softmax.

    ``features`` may be a list of maps: each is pooled and the vectors are concatenated
    (e.g. GAP(bottleneck) ⊕ GAP(top) → Dense(64) → Dropout(0.25) → Dense(C)).

    Args:
        features: The encoder's feature map, or a list of maps.
        n_classes: Output classes (at least 2).
        name: The task's name, the prefix of the head's layers (``<name>.fc``, ``<name>.out``).
        units: Hidden units.
        dropout: Dropout rate.

    Returns:
        The head's output tensor: class probabilities (float32).

    Raises:
        ValueError: Fewer than 2 classes.
    """
    if n_classes < 2:
        raise ValueError(f"{name}: a classification head needs at least 2 classes, got {n_classes}")
    if isinstance(features, (list, tuple)):
        pooled = [layers.GlobalAveragePooling2D(name=f"{name}.gap{i}")(f) for i, f in enumerate(features)]
        x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name=f"{name}.concat")(pooled)
    else:
        x = layers.GlobalAveragePooling2D(name=f"{name}.gap")(features)
    x = layers.Dense(units, activation="relu", name=f"{name}.fc")(x)
    x = layers.Dropout(dropout, name=f"{name}.dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name=f"{name}.out", dtype="float32")(x)


def segmentation_head(features, encoder_filters, name: str, steps: int | None = None):
    """Decoder symmetric to the encoder (:func:`ums_rep.layers.decoder`), then a 3×3
    1-channel sigmoid convolution: the CDAE with its output layer replaced (paper 4.1.2).

    Args:
        features: The encoder's feature map.
        encoder_filters: The encoder's widths, which the decoder mirrors.
        name: The task's name, the prefix of the head's layers (``<name>.dec1.conv``, …).
        steps: Upsampling stages (default: one per width).

    Returns:
        The head's output tensor: a mask probability map (float32).
    """
    x = decoder(features, encoder_filters, name=f"{name}.dec", steps=steps)
    return layers.Conv2D(1, 3, padding="same", activation="sigmoid", name=f"{name}.out", dtype="float32")(x)


def saliency_head(features, name: str, filters: int = 64, momentum: float = 0.99):
    """3×3 conv(``filters``) + BN + ReLU → 1×1 conv → softmax over H×W (as another paper's authors' code).

    Args:
        features: The decoder's last feature map.
        name: The task's name, the prefix of the head's layers.
        filters: Width of the 3×3 convolution.
        momentum: Batch-norm momentum.

    Returns:
        The saliency map, ``(B, H, W, 1)``, summing to 1 over each image (float32).
    """
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}.conv")(features)
    x = BatchNorm(momentum=momentum, name=f"{name}.bn")(x)
    x = layers.ReLU(name=f"{name}.relu")(x)
    x = layers.Conv2D(1, 1, name=f"{name}.logits", dtype="float32")(x)
    return SpatialSoftmax(name=f"{name}.out", dtype="float32")(x)
