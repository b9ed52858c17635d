"""PreciseBN: after every epoch the moving statistics are those of the given training images."""
import numpy as np
import tensorflow as tf

import keras
from ums_rep.batch_norm import precise_batch_norm
from ums_rep.layers import BatchNorm
from ums_rep.strategies import FitConfig, fit
from ums_rep.tasks import Task


def _model(name):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name=f"{name}.conv")(inp)
    x = BatchNorm(momentum=0.9, name=f"{name}.bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name=f"{name}.out")(x), name=name)


def _moments(model, images):
    conv = keras.Model(model.inputs, model.get_layer(f"{model.name}.conv").output)(images).numpy()
    return conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))


def test_moving_statistics_become_those_of_the_images_and_frozen_layers_keep_theirs():
    keras.utils.set_random_seed(0)
    images = tf.random.normal((16, 8, 8, 1)) * 2.0 + 1.0
    live, frozen = _model("live"), _model("frozen")
    frozen.get_layer("frozen.bn").trainable = False
    before = [v.numpy().copy() for v in frozen.get_layer("frozen.bn").non_trainable_weights]
    assert precise_batch_norm([live, frozen], images) == 1
    bn = live.get_layer("live.bn")
    mean, var = _moments(live, images)
    assert np.allclose(bn.moving_mean.numpy(), mean, atol=1e-5)
    assert np.allclose(bn.moving_variance.numpy(), var, rtol=1e-4)
    assert bn.momentum == 0.9  # restored
    for b, v in zip(before, frozen.get_layer("frozen.bn").non_trainable_weights):
        assert np.array_equal(b, v.numpy())


def test_chunks_average_their_statistics():
    keras.utils.set_random_seed(2)
    images = tf.random.normal((24, 8, 8, 1)) * 2.0 + 1.0
    model = _model("c")
    precise_batch_norm([model], images, chunk=8)
    conv = keras.Model(model.inputs, model.get_layer("c.conv").output)
    parts = [conv(images[i:i + 8]).numpy() for i in (0, 8, 16)]
    bn = model.get_layer("c.bn")
    assert np.allclose(bn.moving_mean.numpy(), np.mean([p.mean(axis=(0, 1, 2)) for p in parts], axis=0), atol=1e-5)
    assert np.allclose(bn.moving_variance.numpy(), np.mean([p.var(axis=(0, 1, 2)) for p in parts], axis=0),
                       rtol=1e-4)


def test_fit_re_estimates_batch_norm_after_every_epoch_on_the_images_given():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32) * 3 + 2
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    data = tf.data.Dataset.from_tensor_slices((x, {"label": y})).repeat().batch(8, drop_remainder=True)
    val = tf.data.Dataset.from_tensor_slices((x, {"label": y})).batch(8)
    model = _model("m")
    task = Task("cls", "classification", classes=("a", "b"), optimizer="adam", learning_rate=1e-2)
    images = tf.constant(x[:24])
    fit("joint", {"cls": model}, {"cls": task}, {"cls": data}, {"cls": val},
        FitConfig(epochs=2, steps_per_epoch={"cls": 4}, progress=False, restore_best=False, bn_images=images))
    mean, var = _moments(model, images)  # the final weights' statistics on those images
    assert np.allclose(model.get_layer("m.bn").moving_mean.numpy(), mean, atol=1e-4)
    assert np.allclose(model.get_layer("m.bn").moving_variance.numpy(), var, rtol=1e-3)


class _Counting(keras.layers.Layer):
    calls = 0

    def call(self, x):
        _Counting.calls += 1
        return x


def test_a_model_whose_layers_are_already_set_is_not_run_again():
    """Heads on a shared encoder: the encoder's statistics are estimated once, not once per head."""
    keras.utils.set_random_seed(3)
    images = tf.random.normal((16, 8, 8, 1))
    seg = _model("s")
    head = keras.Model(seg.inputs, keras.layers.Dense(2)(_Counting()(seg.get_layer("s.bn").output)))
    _Counting.calls = 0
    assert precise_batch_norm([seg, head], images) == 1
    assert _Counting.calls == 0
    mean, _ = _moments(seg, images)
    assert np.allclose(seg.get_layer("s.bn").moving_mean.numpy(), mean, atol=1e-5)
