"""Layers and blocks shared by every model of the package: :class:`BatchNorm`, :func:`conv_bn_relu`
and the UMS-Rep :func:`decoder` (used by the CDAE and by segmentation heads).

:class:`BatchNorm` is ``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel
(``FusedBatchNormV3``; oneDNN on CPU, cuDNN on GPU). Keras 3 builds batch norm from separate
moment, subtract, scale and shift ops, each a full pass over the activation. On the 2-core CPU
with oneDNN a hand-timed CDAE training step (256², batch 16) went from 5.0 to 6.8 images/s with
the fused kernel; the result is the same to float32 round-off (tests/ums_rep/test_layers.py).
It has the same weights, config and checkpoints as the Keras layer and falls back to it for what
the fused kernel cannot do (masks, renorm, synchronized statistics, axes other than the last of
a 4-D input), and on Keras backends other than TensorFlow (``benchmarks.keras_jax`` builds the
package's models on JAX).
"""
from __future__ import annotations

import keras
from keras import layers

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf


# Moving-statistics momentum of the UMS-Rep blocks. Keras' 0.99 averages over ~100 steps: with
# the papers' small target sets (10–20 batches an epoch) the inference statistics then lag
# fine-tuned weights by several epochs, and validation losses jump (measured on the main job:
# TB validation loss 0.6 → 3.7 while the training loss fell). 0.9 follows them within an epoch.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="ums_rep")
class BatchNorm(layers.BatchNormalization):
    """Batch normalisation (Ioffe & Szegedy 2015) with TensorFlow's fused kernel."""

    def _fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and self.center and self.scale
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32"))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            # the kernel returns the unbiased (n-1) batch variance for the moving average; Keras keeps
            # the biased one, so undo the correction to track the same statistics as the Keras layer
            n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], variance.dtype)
            variance = variance * (n - 1.0) / tf.maximum(n, 2.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
        return tf.cast(y, self.compute_dtype)


def conv_bn_relu(x, filters, name, strides=1, dilation=1, kernel_size=3, batch_norm=True):
    """3×3 (or ``kernel_size``) "same" convolution, batch norm, ReLU; layers named ``{name}.conv|bn|relu``."""
    # a bias before batch norm is cancelled by its mean subtraction: leave it out
    x = layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation, padding="same",
                      use_bias=not batch_norm, name=f"{name}.conv")(x)
    if batch_norm:
        x = BatchNorm(momentum=BN_MOMENTUM, name=f"{name}.bn")(x)
    return layers.ReLU(name=f"{name}.relu")(x)


def decoder(x, encoder_filters, name: str = "dec", batch_norm: bool = True, steps: int | None = None):
    """The decoder symmetric to a stride-2 encoder: for each encoder stage, ×2 upsampling then a
    3×3 conv + BN + ReLU, widths mirrored (the last stage keeps the first encoder width).
    ``steps`` upsampling stages (default: one per encoder stage); 0 keeps the resolution (for
    dilated encoders that never downsample)."""
    widths = list(encoder_filters[-2::-1]) + [encoder_filters[0]]
    steps = len(encoder_filters) if steps is None else steps
    for i, f in enumerate(widths, 1):
        if i <= steps:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}{i}.up")(x)
        x = conv_bn_relu(x, f, f"{name}{i}", batch_norm=batch_norm)
    return x
