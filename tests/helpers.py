"""Shared test helpers: the builder check (output names and shapes, a config round trip, .keras
save/load with equal outputs, and one train step that changes the weights) and a Markdown table
reader (the reports' tables are padded by ``DataFrame.to_markdown``: compare cells, not strings)."""
import numpy as np
import tensorflow as tf

import keras

from ums_rep.runs import load_model, save_model


def check_builder(model: keras.Model, input_shape, output_shapes: dict, tmp_path, loss_fn=None):
    """``output_shapes`` maps each output layer name to its shape without the batch axis."""
    for name, shape in output_shapes.items():
        layer = model.get_layer(name)
        assert tuple(layer.output.shape[1:]) == tuple(shape), (name, layer.output.shape)
    clone = keras.Model.from_config(model.get_config())
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    path = tmp_path / f"{model.name}.keras"
    save_model(model, path)
    loaded = load_model(path)
    for a, b in zip(tf.nest.flatten(model(x, training=False)), tf.nest.flatten(loaded(x, training=False))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    before = [w.numpy().copy() for w in model.trainable_weights]
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = loss_fn(out) if loss_fn else tf.add_n([tf.reduce_mean(tf.square(o)) for o in tf.nest.flatten(out)])
    grads = tape.gradient(loss, model.trainable_weights)
    opt.apply_gradients(zip(grads, model.trainable_weights))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert np.mean(changed) > 0.9, f"only {np.mean(changed):.0%} of the weights changed"


def table_rows(markdown: str) -> list[list[str]]:
    """Every row of every Markdown table in ``markdown`` as its stripped cells (separator rows
    left out)."""
    rows = []
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and set(line) - set("|:- "):
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
    return rows
