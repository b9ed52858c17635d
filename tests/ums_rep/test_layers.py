"""ums_rep.layers.BatchNorm computes what keras.layers.BatchNormalization computes, with the fused kernel."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from ums_rep.layers import BatchNorm


def _pair(shape, **kwargs):
    keras_bn, fused_bn = keras.layers.BatchNormalization(**kwargs), BatchNorm(**kwargs)
    keras_bn.build(shape)
    fused_bn.build(shape)
    # distinct, non-default statistics and affine weights in both
    fused_bn.set_weights([w + 0.3 * (i + 1) for i, w in enumerate(keras_bn.get_weights())])
    keras_bn.set_weights(fused_bn.get_weights())
    return keras_bn, fused_bn


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_training_step_matches_keras(momentum):
    x = tf.random.stateless_normal((3, 5, 4, 6), seed=(1, 2)) * 2.5 + 0.7
    keras_bn, fused_bn = _pair(x.shape, momentum=momentum)
    weights = tf.range(6, dtype=tf.float32) - 2.0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_keras, y_fused = keras_bn(x, training=True), fused_bn(x, training=True)
        loss_keras, loss_fused = tf.reduce_sum(y_keras ** 2 * weights), tf.reduce_sum(y_fused ** 2 * weights)
    np.testing.assert_allclose(y_fused, y_keras, atol=1e-5)
    # the moving statistics follow Keras' rule (biased batch variance), not the kernel's unbiased one
    for got, want in zip(fused_bn.get_weights(), keras_bn.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss_fused, x), tape.gradient(loss_keras, x), rtol=1e-4, atol=1e-4)
    for got, want in zip(tape.gradient(loss_fused, fused_bn.trainable_variables),
                         tape.gradient(loss_keras, keras_bn.trainable_variables)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_kernel_is_used_on_4d_inputs(dtype):
    bn = BatchNorm()
    bn.build((2, 4, 4, 3))
    for training in (True, False):
        graph = tf.function(lambda x: bn(x, training=training)).get_concrete_function(
            tf.TensorSpec((2, 4, 4, 3), dtype)).graph
        assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}, (dtype, training)


def test_inference_and_frozen_layer_use_moving_statistics():
    x = tf.random.stateless_normal((2, 4, 4, 3), seed=(3, 4))
    keras_bn, fused_bn = _pair(x.shape)
    np.testing.assert_allclose(fused_bn(x, training=False), keras_bn(x, training=False), atol=1e-5)
    before = [w.copy() for w in fused_bn.get_weights()]
    fused_bn.trainable = False  # a frozen encoder: inference statistics even when training=True
    np.testing.assert_allclose(fused_bn(x, training=True), keras_bn(x, training=False), atol=1e-5)
    for got, want in zip(fused_bn.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_falls_back_to_keras_for_other_axes():
    x = tf.random.stateless_normal((2, 3, 5), seed=(5, 6))
    keras_bn, fused_bn = _pair(x.shape, axis=1)
    np.testing.assert_allclose(fused_bn(x, training=True), keras_bn(x, training=True), atol=1e-5)


def test_saved_model_reloads_with_the_fused_layer(tmp_path):
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, BatchNorm(momentum=0.9, name="bn")(inputs))
    model(tf.random.stateless_normal((4, 8, 8, 2), seed=(7, 8)), training=True)  # move the statistics
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("bn"), BatchNorm) and loaded.get_layer("bn").momentum == 0.9
    x = tf.random.stateless_normal((2, 8, 8, 2), seed=(9, 9))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
