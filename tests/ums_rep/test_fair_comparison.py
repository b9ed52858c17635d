"""Arms of a strategy comparison differ in the strategy alone (UMS-Rep Section 4): every head
trained by its task's optimizer and the shared encoder by one declared optimizer under every
strategy and the baseline, every task on as many of its own batches per epoch, models built as a
run builds them (the baseline from random weights, the CXR baseline's denoiser frozen)."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from ums_rep.backbones import cdae
from ums_rep.engine import SHARED, joint_schedule
from ums_rep.experiment import fold_models
from ums_rep.strategies import FitConfig, default_optimizers, fit
from ums_rep.tasks import TASK_SETS

SHARED_OPTIMIZER = ("adam", 1e-3)


def _data(n=48, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    y = {"mask": (x > 0).astype("float32"), "label": np.eye(2, dtype="float32")[(x.mean((1, 2, 3)) > 0).astype(int)]}
    return tf.data.Dataset.from_tensor_slices((x, y))


def _arm(strategy, steps, denoiser=None):
    """One arm of cxr-hetero as ``ums_rep.experiment`` builds it, fitted for one epoch; returns
    what fit reports, the optimizers it used and the models."""
    keras.utils.set_random_seed(0)
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    pretrained = cdae((32, 32, 1))
    dist = tf.distribute.get_strategy()
    models, enc_layers = fold_models(strategy, pretrained, "cxr", specs, {"head_units": 16}, denoiser, dist)
    tasks = {s.task.name: s.task for s in specs}
    ds = _data()
    config = FitConfig(epochs=1, steps_per_epoch=steps, progress=False, restore_best=False,
                       shared_optimizer=SHARED_OPTIMIZER)
    optimizers = None if strategy == "baseline" else default_optimizers(strategy, tasks, dist, SHARED_OPTIMIZER)
    fitted = fit(strategy, models, tasks, {t: ds.repeat().batch(4, drop_remainder=True) for t in tasks},
                 {t: ds.batch(8) for t in tasks}, config, optimizers=optimizers)
    return fitted, optimizers, models, enc_layers, pretrained


@pytest.fixture(scope="module")
def arms():
    steps = {"lung_seg": 3, "abnormal": 1}
    return {s: _arm(s, steps) for s in ("independent", "alternating", "joint", "baseline")}


def test_every_head_has_its_tasks_optimizer_under_every_arm(arms):
    """Today's joint trained every head with the first task's Adam 1e-3 while the other arms gave
    the TB head SGD 1e-2: a comparison of optimizer and strategy at once."""
    tasks = {s.task.name: s.task for s in TASK_SETS["cxr-hetero"]["tasks"]}
    for strategy, (fitted, *_rest) in arms.items():
        used = fitted["optimizers"]
        for name, task in tasks.items():
            assert used[name]["optimizer"].lower() == task.optimizer, (strategy, name, used)
            assert used[name]["learning_rate"] == pytest.approx(task.learning_rate), (strategy, name, used)
        encoders = {k: v for k, v in used.items() if k.startswith(SHARED)}
        if strategy == "independent":
            assert not encoders  # the frozen encoder has no optimizer
        else:
            assert encoders and all(v["optimizer"].lower() == "adam" and v["learning_rate"] == pytest.approx(1e-3)
                                    for v in encoders.values()), (strategy, encoders)
    assert len({repr(sorted((k, v) for k, v in f["optimizers"].items() if not k.startswith(SHARED)))
                for f, *_ in arms.values()}) == 1


def test_every_task_trains_on_its_own_batches_per_epoch_under_every_arm(arms):
    """Today's joint ran max(steps) batches of every task, cycling the smaller task's data."""
    for strategy, (fitted, optimizers, *_rest) in arms.items():
        assert fitted["updates"] == {"lung_seg": 3, "abnormal": 1}, strategy
        if optimizers is not None:  # the head's optimizer applied exactly that many updates
            assert {t: int(optimizers[t].iterations.numpy()) for t in ("lung_seg", "abnormal")} \
                == {"lung_seg": 3, "abnormal": 1}, strategy


def test_joint_schedule_spreads_each_task_over_the_epoch():
    order = joint_schedule(["a", "b", "c"], {"a": 6, "b": 2, "c": 3})
    assert len(order) == 6
    assert [sum(t in step for step in order) for t in "abc"] == [6, 2, 3]
    assert [i for i, step in enumerate(order) if "b" in step] == [2, 5]  # spread, not the first two


def test_independent_run_leaves_the_encoder_unchanged_and_the_others_train_it(arms):
    """Built through the run's own code path (``experiment.fold_models`` reads the registry's
    ``freeze_encoder``): a test that froze the encoder itself could not see freezing switched off."""
    for strategy in ("independent", "alternating", "joint"):
        _fitted, _opt, _models, enc_layers, pretrained = arms[strategy]
        after = [w.numpy() for layer in enc_layers for w in layer.weights]
        before = [pretrained.get_layer(layer.name).get_weights() for layer in enc_layers]
        before = [w for ws in before for w in ws]
        unchanged = all(np.array_equal(a, b) for a, b in zip(after, before))
        assert unchanged == (strategy == "independent"), strategy


def test_baseline_starts_from_random_weights():
    keras.utils.set_random_seed(0)
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    pretrained = cdae((32, 32, 1))
    models, _ = fold_models("baseline", pretrained, "cxr", specs, {"head_units": 16}, None,
                            tf.distribute.get_strategy())
    for name, model in models.items():
        conv = model.get_layer("cdae.enc1.conv").get_weights()[0]
        assert not np.allclose(conv, pretrained.get_layer("cdae.enc1.conv").get_weights()[0]), name


def test_cxr_baseline_denoiser_stays_frozen():
    keras.utils.set_random_seed(1)
    denoiser = cdae((32, 32, 1))
    denoiser.trainable = False
    before = [w.copy() for w in denoiser.get_weights()]
    fitted, *_ = _arm("baseline", {"lung_seg": 2, "abnormal": 2}, denoiser=denoiser)
    assert all(np.array_equal(a, b) for a, b in zip(before, denoiser.get_weights()))
    assert set(fitted["optimizers"]) == {"lung_seg", "abnormal", f"{SHARED}.lung_seg", f"{SHARED}.abnormal"}


def _blobs(n, seed, size=32):
    """Images with a bright square in half of them: the label says whether it is there, the mask
    where it is (a task every arm can learn in a few epochs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n, size, size, 1)).astype("float32")
    label = np.arange(n) % 2
    mask = np.zeros_like(x)
    for i in np.nonzero(label)[0]:
        r, c = rng.integers(2, size - 12, 2)
        x[i, r:r + 10, c:c + 10] += 2.0
        mask[i, r:r + 10, c:c + 10] = 1.0
    return x, {"mask": mask, "label": np.eye(2, dtype="float32")[label]}


@pytest.mark.parametrize("strategy", ["independent", "alternating", "joint", "baseline"])
def test_every_arm_learns_every_head(strategy):
    """Every arm, the baseline included, learns both heads of cxr-hetero on held-out images with
    the optimizers a run gives them: the TB-like head beats the majority rate (0.5) clearly, the
    segmentation head reaches IoU 0.5 (what ``evaluation.learned`` asks of a validation fold). The
    independent arm's heads learn on a frozen, here untrained, encoder."""
    from ums_rep import evaluation, metrics
    keras.utils.set_random_seed(3)
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    dist = tf.distribute.get_strategy()
    models, _ = fold_models(strategy, cdae((32, 32, 1)), "cxr", specs, {"head_units": 32, "head_dropout": 0.0},
                            None, dist)
    tasks = {s.task.name: s.task for s in specs}
    train = tf.data.Dataset.from_tensor_slices(_blobs(96, 0))
    x_val, y_val = _blobs(48, 1)
    fit(strategy, models, tasks, {t: train.shuffle(96, seed=0).repeat().batch(8, drop_remainder=True) for t in tasks},
        {t: train.batch(32) for t in tasks},
        FitConfig(epochs=10, steps_per_epoch={t: 12 for t in tasks}, progress=False, lr_patience=10,
                  stop_patience=None, shared_optimizer=SHARED_OPTIMIZER))
    truth = y_val["label"].argmax(1)
    scores = metrics.classification(truth, models["abnormal"].predict(x_val, verbose=0).argmax(1))
    scores["majority_accuracy"] = 0.5
    assert evaluation.learned(scores) and scores["accuracy"] >= 0.65, (strategy, scores)  # 31 of 48 at least
    seg = metrics.segmentation(y_val["mask"], models["lung_seg"].predict(x_val, verbose=0))
    assert evaluation.learned(seg), (strategy, seg)
