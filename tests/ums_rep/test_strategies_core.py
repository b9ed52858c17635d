"""The training engine: loss goes down, the plateau schedule, non-finite losses."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from ums_rep.engine import alternating_schedule
from ums_rep.schedule import PlateauSchedule
from ums_rep.strategies import FitConfig, NonFiniteLossError, fit
from ums_rep.tasks import Task


def _regression_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = {"clean": (x * 0.5).astype("float32")}
    return tf.data.Dataset.from_tensor_slices((x, y))


def _model():
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same")(h))


def test_a_few_steps_reduce_the_loss():
    keras.utils.set_random_seed(0)
    task = Task("denoise", "reconstruction", optimizer="adam", learning_rate=1e-2)
    ds = _regression_data()
    fitted = fit("joint", {"denoise": _model()}, {"denoise": task},
                 {"denoise": ds.repeat().batch(16, drop_remainder=True)}, {"denoise": ds.batch(16)},
                 FitConfig(epochs=5, steps_per_epoch={"denoise": 4}, progress=False))
    h = fitted["history"]
    assert h[-1]["train_denoise"] < 0.5 * h[0]["train_denoise"]
    assert h[-1]["val_denoise"] < h[0]["val_denoise"]


def test_non_finite_loss_stops_with_best_weights_restored():
    keras.utils.set_random_seed(0)
    task = Task("denoise", "reconstruction", optimizer="sgd", learning_rate=1e6)  # diverges
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    ds = _regression_data()
    with pytest.raises(NonFiniteLossError, match="non-finite denoise loss"):
        fit("joint", {"denoise": model}, {"denoise": task}, {"denoise": ds.repeat().batch(16)},
            {"denoise": ds.batch(16)}, FitConfig(epochs=50, steps_per_epoch={"denoise": 4}, progress=False))
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert all(np.allclose(b, w.numpy()) for b, w in zip(before, model.weights))


def test_plateau_schedule_cuts_resets_and_stops():
    s = PlateauSchedule(lr=1e-3, patience=2, factor=0.1, reset_to_best=True, stop_patience=5)
    actions = [s.update(e, v) for e, v in enumerate([1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96])]
    assert actions[1]["improved"] and s.best_epoch == 1
    assert actions[3]["cut"] and actions[3]["reset"] and actions[3]["lr"] == pytest.approx(1e-4)
    assert actions[5]["cut"] and actions[5]["lr"] == pytest.approx(1e-5)
    assert actions[6]["stop"]  # five epochs since the best
    assert PlateauSchedule(lr=1e-7, patience=1, min_lr=1e-8).update(0, float("nan"))["stop"]


def test_alternating_schedule_follows_the_ratio():
    order = alternating_schedule(["a", "b"], {"a": 2, "b": 1}, {"a": 4, "b": 3})
    assert order == ["a", "a", "b", "a", "a", "b", "b"]


def test_checkpoint_written_every_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    task = Task("denoise", "reconstruction")
    ds = _regression_data()
    model = _model()
    fit("joint", {"denoise": model}, {"denoise": task}, {"denoise": ds.repeat().batch(16)},
        {"denoise": ds.batch(16)}, FitConfig(epochs=3, steps_per_epoch={"denoise": 2}, progress=False,
                                             restore_best=False, checkpoint_dir=tmp_path / "ck"))
    latest = tf.train.latest_checkpoint(str(tmp_path / "ck"))
    assert latest.endswith("-3")
    fresh = _model()
    epoch = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(epoch=epoch, model_denoise=fresh).restore(latest).expect_partial()
    assert int(epoch) == 3
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _two_tasks():
    """Two reconstruction tasks on two small models (no shared layers)."""
    tasks = {t: Task(t, "reconstruction", optimizer="adam", learning_rate=lr) for t, lr in (("a", 1e-2), ("b", 1e-3))}
    ds = _regression_data()
    return ({t: _model() for t in tasks}, tasks, {t: ds.repeat().batch(16, drop_remainder=True) for t in tasks},
            {t: ds.batch(16) for t in tasks})


def test_a_strategy_added_to_the_registry_trains_without_touching_the_loop(monkeypatch, tmp_path):
    """One file declares a strategy: a registry entry, here "round-robin, one rule" (interleaved
    batches like independent, one plateau rule on the sum like alternating), is all fit needs."""
    from ums_rep import strategies
    monkeypatch.setitem(strategies.REGISTRY, "round-robin", strategies.Strategy("round-robin", "interleaved"))
    keras.utils.set_random_seed(0)
    models, tasks, trains, vals = _two_tasks()
    fitted = fit("round-robin", models, tasks, trains, vals,
                 FitConfig(epochs=2, steps_per_epoch={"a": 2, "b": 2}, progress=False))
    assert set(fitted["best_epoch"]) == {strategies.ALL_TASKS}  # one rule on the sum of the validation losses
    h = fitted["history"][0]
    assert {"train_a", "train_b"} <= set(h) and h["lr_a"] == pytest.approx(1e-2) and h["lr_b"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        fit("nope", models, tasks, trains, vals, FitConfig(epochs=1, progress=False))


def test_the_baseline_fits_each_model_alone_with_its_own_checkpoints(tmp_path):
    """The registry's non-shared entry: one joint fit per task, its own rule and checkpoint folder."""
    keras.utils.set_random_seed(0)
    models, tasks, trains, vals = _two_tasks()
    before = {t: [w.numpy().copy() for w in m.weights] for t, m in models.items()}
    fitted = fit("baseline", models, tasks, trains, vals,
                 FitConfig(epochs=2, steps_per_epoch={"a": 2, "b": 2}, progress=False, checkpoint_dir=tmp_path))
    assert set(fitted["best_epoch"]) == set(fitted["stopped"]) == {"a", "b"}
    assert [h["task"] for h in fitted["history"]] == ["a", "a", "b", "b"]
    assert {p.name for p in tmp_path.iterdir()} == {"a", "b"}
    assert all(not np.allclose(b, w.numpy()) for t, m in models.items() for b, w in zip(before[t], m.weights)
               if w.trainable)
