"""On-the-fly geometric augmentation for the fine-tuning pipelines: one small random affine
transform per training image, applied alike to its mask.

Chest radiographs vary in patient position, inspiration and collimation; a small rotation,
zoom and shift (defaults: ±7°, ±8 %, ±6 % of the side) mimics that without flipping the
anatomy (no horizontal flip: the heart stays on the left). The paper does not say how it
augmented; the package's CPU presets, with a few hundred training images per task, need it
to stop a classification head memorising its training images (see ``ums_rep.finetune``).

The draw is stateless, from the pipeline's ``(seed, element)`` pair (:func:`data_prep.pipeline.make_dataset`'s
``map_fn``), so a resumed run sees the transforms an uninterrupted one would. The warp is
``keras.ops.image.affine_transform`` (bilinear for the image, nearest for masks; edges
replicated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf
from keras import ops


@dataclass(frozen=True)
class Affine:
    """Ranges of the random transform: ``rotate`` in degrees, ``zoom`` and ``shift`` as
    fractions of the image side."""

    rotate: float = 7.0
    zoom: float = 0.08
    shift: float = 0.06

    def matrix(self, seed, height, width):
        """The 8 projective parameters mapping output to input coordinates (Keras' convention)."""
        u = tf.random.stateless_uniform((4,), seed, -1.0, 1.0)
        angle = u[0] * (self.rotate * math.pi / 180.0)
        scale = 1.0 + u[1] * self.zoom  # > 1 zooms out (samples a larger input area)
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        tx, ty = u[2] * self.shift * w, u[3] * self.shift * h
        cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # x_in = cos·(x - cx) - sin·(y - cy) + cx + tx ;  y_in = sin·(x - cx) + cos·(y - cy) + cy + ty
        a0, a1, a2 = cos, -sin, cx - cos * cx + sin * cy + tx
        b0, b1, b2 = sin, cos, cy - sin * cx - cos * cy + ty
        return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])

    def __call__(self, image, targets: dict, seed):
        """``(image, targets)`` warped alike; ``targets['mask']`` (if any) stays binary."""
        shape = tf.shape(image)
        transform = self.matrix(seed, shape[0], shape[1])[None]
        image = ops.image.affine_transform(image[None], transform, interpolation="bilinear",
                                           fill_mode="nearest", data_format="channels_last")[0]
        if "mask" in targets:
            mask = ops.image.affine_transform(targets["mask"][None], transform, interpolation="nearest",
                                              fill_mode="nearest", data_format="channels_last")[0]
            targets = {**targets, "mask": mask}
        return image, targets
