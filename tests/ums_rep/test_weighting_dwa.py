"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, Eq. 1) and the weighting registry:
the example of a rule added in ``ums_rep/weighting.py`` alone, without touching the loop."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras
from ums_rep import weighting
from ums_rep.engine import Engine
from ums_rep.hooks import EpochCallback
from ums_rep.strategies import FitConfig, default_hooks, fit
from ums_rep.tasks import Task
from ums_rep.weighting import DynamicWeightAverage, get


def _eq1(before, last, T=2.0):
    """Eq. (1) written out term by term."""
    K = len(last)
    r = [last[k] / before[k] for k in range(K)]
    denom = sum(np.exp(r_i / T) for r_i in r)
    return [K * np.exp(r_k / T) / denom for r_k in r]


def _feed(dwa, history):
    """Run the rule's epoch hook over a loss history; return the weights each epoch trained with."""
    used = []
    for epoch, losses in enumerate(history):
        used.append(dwa.values())
        dwa.on_epoch_end(epoch, losses)
    used.append(dwa.values())
    return used


def test_weights_follow_eq1_sum_to_k_and_start_at_one():
    history = [{"a": 2.0, "b": 1.0, "c": 0.5}, {"a": 1.0, "b": 0.9, "c": 0.5},
               {"a": 0.8, "b": 0.3, "c": 0.6}]
    dwa = DynamicWeightAverage(["a", "b", "c"])
    used = _feed(dwa, history)
    assert used[0] == used[1] == {"weight_a": 1.0, "weight_b": 1.0, "weight_c": 1.0}
    for t in (2, 3):  # epoch t's weights from L(t−1)/L(t−2)
        before, last = ([history[t - 2][k] for k in "abc"], [history[t - 1][k] for k in "abc"])
        expected = _eq1(before, last)
        got = [used[t][f"weight_{k}"] for k in "abc"]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert sum(got) == pytest.approx(3.0, rel=1e-6)
    # epoch 2: a's loss halved, b's fell 10%, c's flat → the slowest task (c) weighs most
    assert used[2]["weight_c"] > used[2]["weight_b"] > used[2]["weight_a"]


def test_temperature_and_combined_loss():
    dwa = DynamicWeightAverage(["a", "b"], temperature=0.5)
    _feed(dwa, [{"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 1.0}])
    w = _eq1([1.0, 1.0], [0.5, 1.0], T=0.5)
    total, weights = dwa({"a": tf.constant(3.0), "b": tf.constant(5.0)})
    assert float(total) == pytest.approx(w[0] * 3.0 + w[1] * 5.0, rel=1e-6)
    assert [float(weights["a"]), float(weights["b"])] == pytest.approx(w, rel=1e-6)


def test_changing_the_weights_does_not_retrace_the_step():
    """The weights are variables: the compiled step reads them, so epoch updates reuse its graph."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    shared = keras.layers.Dense(4)(inp)
    models = {t: keras.Model(inp, keras.layers.Dense(1, name=f"head_{t}")(shared)) for t in "ab"}
    tasks = {t: Task(t, "reconstruction") for t in "ab"}
    dwa = DynamicWeightAverage(list(tasks))
    engine = Engine("joint", models, tasks, {"joint": keras.optimizers.SGD(1e-2)}, weighting=dwa)
    step = engine.step_fn("joint")
    batch = {t: (tf.ones((2, 4)), {"clean": tf.ones((2, 1))}) for t in tasks}
    for epoch, losses in enumerate([{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 1.9}, {"a": 0.2, "b": 1.5}]):
        step(batch)
        dwa.on_epoch_end(epoch, losses)
    step(batch)
    assert dwa.values()["weight_b"] > 1.0  # the weights did change ...
    assert step.experimental_get_tracing_count() == 1  # ... and the step was traced once

    # the step uses the new weights: a zero weight leaves that task's head untouched
    dwa.weight.assign([0.0, 2.0])
    head_a = [w.numpy().copy() for w in models["a"].get_layer("head_a").weights]
    step(batch)
    for before, after in zip(head_a, models["a"].get_layer("head_a").weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert step.experimental_get_tracing_count() == 1


def _two_task_fit(dwa, epochs=4, on_epoch_end=None, **config):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    ds = {"a": tf.data.Dataset.from_tensor_slices((x, {"clean": x[:, :1]})),
          "b": tf.data.Dataset.from_tensor_slices((x, {"clean": 3 * x[:, 1:2] + 1}))}
    inp = keras.Input((4,))
    shared = keras.layers.Dense(8, activation="relu")(inp)
    models = {t: keras.Model(inp, keras.layers.Dense(1)(shared)) for t in ds}
    tasks = {t: Task(t, "reconstruction", optimizer="adam", learning_rate=1e-2) for t in ds}
    config = FitConfig(epochs=epochs, steps_per_epoch={t: 4 for t in ds}, progress=False, **config)
    return fit("joint", models, tasks, {t: d.repeat().batch(8, drop_remainder=True) for t, d in ds.items()},
               {t: d.batch(8) for t, d in ds.items()}, config, weighting=dwa,
               hooks=None if on_epoch_end is None else [*default_hooks(config), EpochCallback(on_epoch_end)])


def test_fit_with_dwa_records_the_weights_of_every_epoch():
    dwa = get("dwa", tasks=["a", "b"])
    history = _two_task_fit(dwa)["history"]
    assert len(history) == 4
    assert [(h["weight_a"], h["weight_b"]) for h in history[:2]] == [(1.0, 1.0), (1.0, 1.0)]
    for t in (2, 3):  # from the history's own training losses, by Eq. (1)
        expected = _eq1([history[t - 2]["train_a"], history[t - 2]["train_b"]],
                        [history[t - 1]["train_a"], history[t - 1]["train_b"]])
        np.testing.assert_allclose([history[t]["weight_a"], history[t]["weight_b"]], expected, rtol=1e-5)
        assert history[t]["weight_a"] + history[t]["weight_b"] == pytest.approx(2.0, rel=1e-5)
    assert history[2]["weight_a"] != 1.0
    assert dwa.describe()["rule"] == "dwa"


def test_resumed_fit_continues_the_weights(tmp_path):
    """The rule's loss history is checkpointed: a run stopped after 2 of 4 epochs and resumed
    trains epochs 3 and 4 with the weights of an uninterrupted run."""
    whole = _two_task_fit(get("dwa", tasks=["a", "b"]), epochs=4)["history"]

    def crash(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _two_task_fit(get("dwa", tasks=["a", "b"]), epochs=4, checkpoint_dir=tmp_path, on_epoch_end=crash)
    resumed = _two_task_fit(get("dwa", tasks=["a", "b"]), epochs=4, checkpoint_dir=tmp_path, resume=True)["history"]
    for t in (2, 3):
        assert resumed[t]["weight_a"] == pytest.approx(whole[t]["weight_a"], rel=1e-4)
        assert resumed[t]["weight_a"] != 1.0


def test_registry_by_name_and_unknown_names():
    assert isinstance(get("dwa", tasks=["a"]), DynamicWeightAverage)
    assert isinstance(get("fixed", weights={"a": 2.0}), weighting.FixedWeights)
    assert isinstance(get("uncertainty", learned=["a"]), weighting.UncertaintyWeights)
    assert {"fixed", "uncertainty", "dwa"} <= set(weighting.WEIGHTINGS)
    with pytest.raises(ValueError, match=r"unknown weighting 'gradnorm'; expected one of \['dwa', 'fixed', 'uncertainty'"):
        get("gradnorm")
    with pytest.raises(ValueError, match="already registered"):
        weighting.register("dwa")(type("Other", (weighting.Weighting,), {}))
    with pytest.raises(ValueError, match="temperature"):
        DynamicWeightAverage(["a"], temperature=0)
    with pytest.raises(ValueError, match="built for tasks"):
        DynamicWeightAverage(["a"])({"b": tf.constant(1.0)})


MIRRORED = textwrap.dedent('''
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from ums_rep.strategies import FitConfig, fit
    from ums_rep.tasks import Task
    from ums_rep.weighting import get
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    ds = {"a": tf.data.Dataset.from_tensor_slices((x, {"clean": x[:, :1]})),
          "b": tf.data.Dataset.from_tensor_slices((x, {"clean": 3 * x[:, 1:2] + 1}))}
    out = {}
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for devices in (1, 2):
        dist = mirrored if devices == 2 else tf.distribute.get_strategy()
        keras.utils.set_random_seed(0)
        with dist.scope():
            inp = keras.Input((4,))
            shared = keras.layers.Dense(8, activation="relu")(inp)
            models = {t: keras.Model(inp, keras.layers.Dense(1)(shared)) for t in ds}
            dwa = get("dwa", tasks=list(ds))
        tasks = {t: Task(t, "reconstruction", optimizer="adam", learning_rate=1e-2) for t in ds}
        h = fit("joint", models, tasks, {t: d.repeat().batch(8, drop_remainder=True) for t, d in ds.items()},
                {t: d.batch(8) for t, d in ds.items()},
                FitConfig(epochs=4, steps_per_epoch={t: 4 for t in ds}, progress=False), weighting=dwa, dist=dist)
        out[devices] = {"weights": [[r["weight_a"], r["weight_b"]] for r in h["history"]],
                        "mirrored": type(dwa.weight).__name__}
    json.dump(out, sys.stdout)
''')


def test_dwa_under_mirrored_strategy_matches_one_device():
    res = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["2"]["mirrored"] == "MirroredVariable"
    assert out["2"]["weights"][2] != [1.0, 1.0]
    np.testing.assert_allclose(out["1"]["weights"], out["2"]["weights"], rtol=1e-4)
