"""Derivable tasks (UMS-Rep Section 4.3): visual explanations and the echo recommendation.

* :func:`grad_cam` — Grad-CAM (Selvaraju et al. 2017): the ReLU of the feature maps of
  ``layer_name`` weighted by the spatially averaged gradient of the class score, upsampled to
  the input and normalised to [0, 1] per image;
* :func:`recommend` — keep images whose predicted flow is the chosen type and whose predicted
  quality is good (e.g. only good-quality TR strips go on to measurement).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras

from data_prep.plotting import pyplot
from ums_rep.tasks import FLOW_CLASSES


def grad_cam(model: keras.Model, images, layer_name: str, class_index=None) -> np.ndarray:
    """Heatmaps (N, H, W) in [0, 1] for a classification model's winning (or given) class."""
    layer = model.get_layer(layer_name)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # called with one tensor, no warning
    probe = keras.Model(inputs, [layer.output, model.output])
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        feats, probs = probe(x, training=False)
        tape.watch(feats)
        idx = tf.argmax(probs, axis=1) if class_index is None else tf.fill([tf.shape(x)[0]], int(class_index))
        score = tf.gather(probs, idx, axis=1, batch_dims=1)
    # float32 whatever the model's policy (under mixed_bfloat16 the features are bfloat16)
    grads, feats = tf.cast(tape.gradient(score, feats), tf.float32), tf.cast(feats, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, tf.shape(x)[1:3], method="bilinear")[..., 0].numpy()
    lo = cam.min(axis=(1, 2), keepdims=True)
    hi = cam.max(axis=(1, 2), keepdims=True)
    return np.where(hi > lo, (cam - lo) / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)


def overlay_png(path, images, heatmaps, titles=None) -> None:
    """Heatmaps (jet) over the gray images, side by side, as one PNG."""
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(np.squeeze(images[i]), cmap="gray")
        ax.imshow(heatmaps[i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(titles[i] if titles else "", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def recommend(flow_probs, quality_probs, flow_classes=FLOW_CLASSES, quality_classes=("low", "good"),
              flow: str = "TR", min_quality: float = 0.5) -> np.ndarray:
    """Boolean per image: predicted flow is ``flow`` and P(good quality) ≥ ``min_quality``."""
    if flow not in flow_classes:
        raise ValueError(f"unknown flow {flow!r}; expected one of {flow_classes}")
    flow_pred = np.asarray(flow_probs).argmax(1) == list(flow_classes).index(flow)
    good = np.asarray(quality_probs)[:, list(quality_classes).index("good")] >= min_quality
    return flow_pred & good
