"""Layers shared by every model of the package.

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
