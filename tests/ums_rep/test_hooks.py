"""Hooks on the training loop (ums_rep.hooks): a new behaviour is a hook passed to fit, written
here without touching strategies.py, and the default hooks (PreciseBN, the weighting rule's epoch
step, logging, checkpoints) do what the loop did when they were written into it."""
import logging
import time

import numpy as np
import pytest
import tensorflow as tf

import keras
from ums_rep.hooks import Checkpoints, EpochCallback, Hook, LogEpoch, PreciseBatchNorm, WeightingStep
from ums_rep.strategies import ALL_TASKS, FitConfig, default_hooks, fit
from ums_rep.tasks import Task
from ums_rep.weighting import get


def _setup(seed=0):
    """Two regression tasks, heads on one shared layer with batch norm: models (their initial
    weights drawn with ``seed``), tasks, data (always the same)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(32, 4)) * 3 + 2).astype("float32")
    ds = {"a": tf.data.Dataset.from_tensor_slices((x, {"clean": x[:, :1]})),
          "b": tf.data.Dataset.from_tensor_slices((x, {"clean": 3 * x[:, 1:2] + 1}))}
    inp = keras.Input((4,))
    shared = keras.layers.BatchNormalization(name="shared.bn")(keras.layers.Dense(8, activation="relu")(inp))
    models = {t: keras.Model(inp, keras.layers.Dense(1, name=f"{t}.out")(shared)) for t in ds}
    tasks = {t: Task(t, "reconstruction", optimizer="adam", learning_rate=1e-2) for t in ds}
    train = {t: d.repeat().batch(8, drop_remainder=True) for t, d in ds.items()}
    return models, tasks, train, {t: d.batch(8) for t, d in ds.items()}, x


def _config(**kw):
    return FitConfig(**{"epochs": 3, "steps_per_epoch": {"a": 2, "b": 2}, "progress": False, **kw})


class Recorder(Hook):
    """A hook written in this test: what the loop calls, with what."""

    def __init__(self):
        self.calls, self.records = [], []

    def before_fit(self, state):
        self.calls.append(("before_fit", len(state.history)))

    def before_validation(self, epoch, state):
        self.calls.append(("before_validation", epoch))
        assert set(state.train_losses) == {"a", "b"}  # the epoch's training losses

    def after_validation(self, epoch, record, state):
        self.calls.append(("after_validation", epoch))
        assert "val_a" in record and "lr_cut" not in record  # before the record joins the history
        record["seen_by_hook"] = epoch  # joins the history

    def after_epoch(self, epoch, record, state):
        self.calls.append(("after_epoch", epoch))
        assert state.history[-1] is record and record["epoch"] == epoch + 1
        self.records.append(dict(record))

    def after_fit(self, state):
        self.calls.append(("after_fit", len(state.history)))


def test_a_hook_written_in_a_test_runs_at_every_point_of_every_epoch():
    models, tasks, train, val, _ = _setup()
    config = _config()
    recorder = Recorder()
    fitted = fit("joint", models, tasks, train, val, config, hooks=[*default_hooks(config), recorder])
    epochs = [(point, e) for e in range(3) for point in ("before_validation", "after_validation", "after_epoch")]
    assert recorder.calls == [("before_fit", 0), *epochs, ("after_fit", 3)]
    assert [r["epoch"] for r in recorder.records] == [1, 2, 3]
    assert [h["seen_by_hook"] for h in fitted["history"]] == [0, 1, 2]
    assert recorder.records == fitted["history"]


class Counter(Hook):
    """Counts the epochs each task's fit ran, and the fits."""

    def __init__(self):
        self.fits, self.epochs = 0, {}

    def before_fit(self, state):
        self.fits += 1

    def after_epoch(self, epoch, record, state):
        for task in state.tasks:
            self.epochs[task] = self.epochs.get(task, 0) + 1


def test_the_baseline_runs_the_hooks_in_each_tasks_fit():
    models, tasks, train, val, _ = _setup()
    config = _config(epochs=2)
    counter = Counter()
    fit("baseline", models, tasks, train, val, config, hooks=[*default_hooks(config), counter])
    assert counter.fits == 2 and counter.epochs == {"a": 2, "b": 2}  # one fit per task


class StopAfter(Hook):
    """Ends the fit after ``epochs`` epochs, whatever the plateau rules say."""

    def __init__(self, epochs):
        self.epochs = epochs

    def after_validation(self, epoch, record, state):
        if epoch + 1 >= self.epochs:
            state.request_stop(f"stopped by a hook after {self.epochs} epochs")


def test_a_hook_stops_the_fit_and_a_resumed_run_trains_no_further(tmp_path):
    models, tasks, train, val, _ = _setup()
    config = _config(epochs=5, checkpoint_dir=tmp_path / "ck", stop_patience=None)
    fitted = fit("joint", models, tasks, train, val, config, hooks=[*default_hooks(config), StopAfter(2)])
    assert len(fitted["history"]) == 2
    assert fitted["stopped"] == {ALL_TASKS: "stopped by a hook after 2 epochs"}
    models, tasks, train, val, _ = _setup()
    resumed = fit("joint", models, tasks, train, val, _config(epochs=5, checkpoint_dir=tmp_path / "ck", resume=True))
    assert len(resumed["history"]) == 2 and resumed["stopped"] == fitted["stopped"]


def test_fit_returns_one_shape_keyed_by_the_schedules_groups():
    for strategy, groups in (("joint", {ALL_TASKS}), ("alternating", {ALL_TASKS}), ("independent", {"a", "b"}),
                             ("baseline", {"a", "b"})):
        models, tasks, train, val, _ = _setup()
        if strategy == "independent":
            for layer in models["a"].layers[:3]:
                layer.trainable = False  # the shared encoder is frozen
        fitted = fit(strategy, models, tasks, train, val, _config(epochs=1))
        for key in ("best_epoch", "stopped", "schedule"):
            assert set(fitted[key]) == groups, (strategy, key, fitted[key])


def test_default_hooks_are_the_configs_behaviour(tmp_path):
    assert [type(h) for h in default_hooks(_config())] == [WeightingStep, LogEpoch]
    hooks = default_hooks(_config(bn_images=np.zeros((4, 4), "float32"), checkpoint_dir=tmp_path))
    assert [type(h) for h in hooks] == [PreciseBatchNorm, WeightingStep, LogEpoch, Checkpoints]
    # fit without hooks runs the defaults: the same history as with them given
    runs = []
    for given in (None, default_hooks(_config())):
        models, tasks, train, val, _ = _setup()
        runs.append(fit("joint", models, tasks, train, val, _config(), hooks=given)["history"])
    for a, b in zip(*runs):
        assert a.keys() == b.keys()
        assert a["val_total"] == pytest.approx(b["val_total"], rel=1e-6)


def test_precise_batch_norm_hook_sets_the_moving_statistics():
    stats = {}
    for hooks in ([], "precise"):
        models, tasks, train, val, x = _setup()
        images = tf.constant(x[:24])
        given = [PreciseBatchNorm(images)] if hooks else []
        fit("joint", models, tasks, train, val, _config(epochs=2, restore_best=False), hooks=given)
        bn = models["a"].get_layer("shared.bn")
        features = keras.Model(models["a"].inputs, bn.input)(images).numpy()
        stats[bool(hooks)] = (bn.moving_mean.numpy(), features.mean(axis=0))
    moving, wanted = stats[True]
    np.testing.assert_allclose(moving, wanted, atol=1e-4)  # the images' statistics (final weights)
    moving, wanted = stats[False]
    assert not np.allclose(moving, wanted, atol=1e-2)  # the moving averages of a few batches


def test_weighting_step_logs_and_steps_the_rule():
    for hooks, logged in (([], False), ([WeightingStep()], True)):
        models, tasks, train, val, _ = _setup()
        dwa = get("dwa", tasks=["a", "b"])
        history = fit("joint", models, tasks, train, val, _config(), weighting=dwa, hooks=hooks)["history"]
        assert ("weight_a" in history[-1]) == logged
        assert (int(dwa.epochs_seen.numpy()) == 3) == logged  # DWA saw every epoch's training losses
        if logged:  # the rule's values join the record before the schedule's flags
            keys = list(history[0])
            assert keys.index("weight_b") < keys.index("lr_cut")


def test_log_epoch_hook_logs_one_line_per_epoch(caplog):
    caplog.set_level(logging.INFO, logger="ums_rep.hooks")
    models, tasks, train, val, _ = _setup()
    fit("joint", models, tasks, train, val, _config(epochs=2), hooks=[LogEpoch()])
    lines = [r.getMessage() for r in caplog.records if r.name == "ums_rep.hooks"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert "train_a" in lines[0] and "val_b" in lines[0] and "lr " in lines[0]


def test_checkpoints_hook_writes_the_store_and_a_crashed_run_resumes(tmp_path):
    models, tasks, train, val, _ = _setup()
    whole = fit("joint", models, tasks, train, val, _config(epochs=4))["history"]

    def crash(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    config = _config(epochs=4, checkpoint_dir=tmp_path / "ck")
    models, tasks, train, val, _ = _setup()
    with pytest.raises(KeyboardInterrupt):
        fit("joint", models, tasks, train, val, config, hooks=[Checkpoints(), EpochCallback(crash)])
    assert (tmp_path / "ck" / "state.json").is_file() and tf.train.latest_checkpoint(str(tmp_path / "ck"))
    models, tasks, train, val, _ = _setup(seed=1)  # other initial weights: the checkpoint sets them
    resumed = fit("joint", models, tasks, train, val, _config(epochs=4, checkpoint_dir=tmp_path / "ck", resume=True))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    for a, b in zip(resumed["history"], whole):
        assert a["val_total"] == pytest.approx(b["val_total"], rel=1e-4)


class Sleep(Hook):
    """Takes ``seconds`` of a clock at one point of every epoch (``advance`` moves the clock)."""

    def __init__(self, point, seconds, advance):
        self.point, self.seconds, self.advance = point, seconds, advance

    def before_validation(self, epoch, state):
        if self.point == "before_validation":
            self.advance(self.seconds)

    def after_epoch(self, epoch, record, state):
        if self.point == "after_epoch":
            self.advance(self.seconds)


@pytest.mark.parametrize("point", ["before_validation", "after_epoch"])
def test_every_second_a_hook_takes_counts_in_the_fits_seconds(point, monkeypatch):
    """A protocol rule: the arms' seconds are every second of fine-tuning, hooks included. The
    hook takes 1000 s of a clock that runs ahead of the real one (no real sleep, no noise)."""
    ahead, real = [0.0], time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + ahead[0])
    seconds = {}
    for hooks in ([], [Sleep(point, 1000.0, lambda s: ahead.__setitem__(0, ahead[0] + s))]):
        models, tasks, train, val, _ = _setup()
        fitted = fit("joint", models, tasks, train, val, _config(epochs=2), hooks=hooks)
        seconds[len(hooks)] = sum(fitted["seconds"].values())
    assert seconds[1] - seconds[0] == pytest.approx(2 * 1000.0, abs=60)  # two epochs, each 1000 s
    inside_the_record = point == "before_validation"  # before validation: in the epoch's own record
    assert all((h["seconds"] >= 1000.0) == inside_the_record for h in fitted["history"])
