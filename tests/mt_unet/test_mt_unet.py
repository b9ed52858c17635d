"""MT-UNet: model outputs, MTL1/2/3 losses and their equilibrium, RLRP with reset, saliency
metrics, and the train / evaluate / compare commands at a tiny size."""
import json
import math

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mt_unet import baselines, data
from mt_unet.evaluate import main as evaluate_main
from mt_unet.model import build, mt_unet
from mt_unet.tasks import DISEASE, SALIENCY, TASKS
from mt_unet.schedule import ResetOnPlateau, fit_config_kwargs
from mt_unet.train import compare, main
from tests.helpers import table_rows
from ums_rep import metrics
from ums_rep.checkpoints import optimizer_state
from ums_rep.heads import SpatialSoftmax
from ums_rep.hooks import EpochCallback
from ums_rep.losses import categorical_crossentropy, kld
from ums_rep.strategies import ALL_TASKS, FitConfig, default_hooks, fit
from ums_rep.weighting import mtl

SHAPE = (32, 48, 1)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *SHAPE)).astype("float32")
    sal = rng.random((n, *SHAPE)).astype("float32") ** 4
    sal /= sal.sum(axis=(1, 2, 3), keepdims=True)
    label = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return x, {"saliency": sal, "label": label}


@pytest.mark.parametrize("name", ["mtunet", "unets", "simplenet", "msinet", "vggssm"])
def test_saliency_output_is_a_distribution_per_image(name):
    keras.utils.set_random_seed(0)
    net, tasks = build(name, SHAPE, 3, base_filters=4)
    out = net(_batch()[0] * 5, training=False)
    sal = np.asarray(out[SALIENCY], np.float64)
    assert sal.shape == (4, *SHAPE)
    assert (sal >= 0).all()
    np.testing.assert_allclose(sal.sum(axis=(1, 2, 3)), 1.0, atol=1e-5)
    assert sal.reshape(4, -1).std(axis=1).min() > 0  # not a constant map


def test_variants_pool_the_right_features():
    def gap_inputs(variant):
        net = mt_unet(SHAPE, filters=(4, 8, 16, 32, 64), variant=variant)
        return sorted(int(net.get_layer(layer.name).input.shape[-1])
                      for layer in net.layers if layer.name.startswith(f"{DISEASE}.gap"))
    assert gap_inputs("full") == [4, 64]  # top (64 at paper width) ⊕ bottleneck (1024)
    assert gap_inputs("bottleneck") == [64]
    assert gap_inputs("top") == [4]
    assert set(build("unetc", SHAPE, 3, 4)[0].output) == {DISEASE}
    with pytest.raises(ValueError, match="multiples of 16"):
        mt_unet((30, 48, 1))


def test_paper_width_has_the_authors_parameter_count():
    # the authors' PyTorch MT-UNet: ≈34.6 M trainable parameters
    net = mt_unet((64, 48, 1))
    assert abs(net.count_params() - 34.6e6) / 34.6e6 < 0.01


def test_keras_application_classifiers_take_grayscale():
    net, tasks = build("resnet50", (64, 48, 1), 3)
    assert tasks == (DISEASE,)
    p = np.asarray(net(np.zeros((2, 64, 48, 1), "float32"))[DISEASE])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 75"):
        baselines.inception_resnet_v2((64, 48, 1))


@pytest.mark.parametrize("scheme", ["mtl1", "mtl2", "mtl3"])
def test_loss_equals_the_papers_equation_with_sigma_fixed(scheme):
    w = mtl(scheme, SALIENCY, DISEASE)
    s = 1.7
    for v in w.trainable_variables:
        v.assign(math.log(s))
    x, y = _batch()
    pred_s = np.full_like(y["saliency"], 1.0 / np.prod(SHAPE))
    pred_c = np.full_like(y["label"], 1 / 3)
    ls = float(tf.reduce_mean(kld(y["saliency"], pred_s)))
    lc = float(tf.reduce_mean(categorical_crossentropy(y["label"], pred_c)))
    # by hand: KL(truth ‖ uniform) = Σ t ln(t·N), CE against uniform = ln 3
    t = y["saliency"].reshape(4, -1).astype(np.float64)
    ls_hand = np.mean(np.sum(np.where(t > 0, t * np.log(t * t.shape[1]), 0.0), axis=1))
    assert ls == pytest.approx(ls_hand, rel=1e-4) and lc == pytest.approx(math.log(3), rel=1e-5)
    expected = {"mtl1": ls / s**2 + lc / s**2 + 2 * math.log(s + 1),  # Eq. (1)
                "mtl2": ls / s**2 + lc + math.log(s + 1),  # Eq. (4), σ_c = 1
                "mtl3": ls + lc / s**2 + math.log(s + 1)}[scheme]  # Eq. (5), σ_s = 1
    total, _ = w({SALIENCY: tf.constant(ls), DISEASE: tf.constant(lc)})
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert len(w.trainable_variables) == {"mtl1": 2, "mtl2": 1, "mtl3": 1}[scheme]
    assert w.values() == {f"sigma_{t}": pytest.approx(s) for t in w.learned}


@pytest.mark.parametrize("scheme", ["mtl1", "mtl3"])
def test_loss_form_paper_or_authors_weights_the_saliency_term(scheme):
    """--loss-form: the saliency KLD over σ_s² (Eqs. 1, 4; KLD itself under MTL3, Eq. 5) or over
    2σ_s² (½·KLD under MTL3), as the authors' public code's compute_loss; CE/σ_c² in both."""
    s, ls, lc = 1.7, 0.8, 1.1
    totals = {}
    for form in ("paper", "authors"):
        w = mtl(scheme, SALIENCY, DISEASE, form)
        for v in w.trainable_variables:
            v.assign(math.log(s))
        total, weights = w({SALIENCY: tf.constant(ls), DISEASE: tf.constant(lc)})
        totals[form] = float(total)
        sal = {("mtl1", "paper"): 1 / s**2, ("mtl1", "authors"): 1 / (2 * s**2),
               ("mtl3", "paper"): 1.0, ("mtl3", "authors"): 0.5}[scheme, form]
        assert float(weights[SALIENCY]) == pytest.approx(sal, rel=1e-6)
        assert float(weights[DISEASE]) == pytest.approx(1 / s**2, rel=1e-6)
        assert w.describe()["halved"] == ([SALIENCY] if form == "authors" else [])
    n_log = len(w.trainable_variables)
    assert totals["paper"] == pytest.approx((ls if scheme == "mtl3" else ls / s**2) + lc / s**2
                                            + n_log * math.log(s + 1), rel=1e-6)
    assert totals["paper"] - totals["authors"] == pytest.approx((ls if scheme == "mtl3" else ls / s**2) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="loss form"):
        mtl(scheme, SALIENCY, DISEASE, "halved")


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_sigma_gradient_vanishes_at_the_appendix_a_equilibrium(sigma):
    w = mtl("mtl1", SALIENCY, DISEASE)
    for v in w.trainable_variables:
        v.assign(math.log(sigma))

    def grads(loss_value):
        with tf.GradientTape() as tape:
            total, _ = w({SALIENCY: tf.constant(loss_value), DISEASE: tf.constant(loss_value)})
        return [float(g) for g in tape.gradient(total, w.trainable_variables)]

    equilibrium = sigma**3 / (2 * sigma + 2)  # Appendix A, Eq. (8)
    assert grads(equilibrium) == pytest.approx([0.0, 0.0], abs=1e-6)
    # a smaller loss pushes σ down (positive gradient), a larger one up: the "vicious circle"
    assert all(g > 1e-3 for g in grads(equilibrium * 0.5))
    assert all(g < -1e-3 for g in grads(equilibrium * 2))


@pytest.mark.parametrize("schedule", ["authors", "package"])
def test_keras_callback_cuts_the_rate_and_restores_the_best_weights(schedule):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    cb = ResetOnPlateau(patience=2, schedule=schedule)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    best = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in best])
    cb.on_epoch_end(1, {"val_loss": 2.0})  # one epoch without improvement: nothing yet
    assert not np.allclose(model.get_weights()[0], best[0])
    # P = 2: the package cuts on the second epoch without improvement; the authors' code
    # (PyTorch's ReduceLROnPlateau: bad epochs > P) on the third
    cut = {"package": 2, "authors": 3}[schedule]
    for e in range(2, cut):
        cb.on_epoch_end(e, {"val_loss": 2.5})
        assert cb.events == [] and not np.allclose(model.get_weights()[0], best[0])
    logs = {"val_loss": 3.0}
    cb.on_epoch_end(cut, logs)  # cut by 90% and reset to epoch 0
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)
    assert logs["lr"] == pytest.approx(1e-3)
    assert cb.events == [{"epoch": cut, "lr": pytest.approx(1e-3), "reset_to": 0}]
    for e in range(cut + 1, 2 * 2 + 3):
        cb.on_epoch_end(e, {"val_loss": 3.0})
        assert not model.stop_training
    cb.on_epoch_end(2 * 2 + 3, {"val_loss": 3.0})
    assert model.stop_training  # 2P + 3 epochs without improvement


@pytest.mark.parametrize("schedule", ["package", "authors"])
def test_keras_callback_works_inside_model_fit(schedule):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    ends, begins, val = {}, {}, []
    opt_ends, opt_begins = {}, {}

    def opt_state():  # the optimizer's iteration count and Adam's moments
        return [np.array(v.numpy()) for v in optimizer_state(model.optimizer)]

    class Recorder(keras.callbacks.Callback):  # runs before ResetOnPlateau: sees each epoch's own weights
        def on_epoch_begin(self, epoch, logs=None):
            begins[epoch] = [w.copy() for w in self.model.get_weights()]
            opt_begins[epoch] = opt_state()

        def on_epoch_end(self, epoch, logs=None):
            ends[epoch] = [w.copy() for w in self.model.get_weights()]
            opt_ends[epoch] = opt_state()
            val.append(logs["val_loss"])

    cb = ResetOnPlateau(patience=1, schedule=schedule)
    # the validation target is unreachable and drifts away, so validation never improves after epoch 0
    epochs, cuts = {"package": (4, (1, 2, 3)), "authors": (5, (2, 4))}[schedule]
    hist = model.fit(x, x[:, :1], validation_data=(x, x[:, :1] * 0 + 100), epochs=epochs, verbose=0,
                     callbacks=[Recorder(), cb])
    assert val == pytest.approx(hist.history["val_loss"])
    assert int(np.argmin(val)) == 0, val  # the best epoch
    # P = 1: the package cuts the rate by 90% and resets to epoch 0 on every epoch after the best
    # one; the authors' rule (bad epochs > P) on every second
    assert cb.events == [{"epoch": e, "lr": pytest.approx(1e-2 * 0.1 ** (k + 1)), "reset_to": 0}
                         for k, e in enumerate(cuts)]
    lrs = [1e-2 * 0.1 ** sum(c <= e for c in cuts) for e in range(epochs)]
    assert hist.history["lr"] == pytest.approx(lrs)
    if schedule == "package":
        assert hist.history["lr"] == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    for e in cuts:  # the epoch trained away from the best weights; the reset brought them back
        assert not np.allclose(ends[e][0], ends[0][0])
        after = begins[e + 1] if e + 1 in begins else model.get_weights()
        for a, b in zip(after, ends[0]):
            np.testing.assert_array_equal(a, b)
        # the authors' code reloads the best epoch's optimizer too (moments and step count); the
        # package's rule keeps the optimizer state it reached
        after_opt = opt_begins[e + 1] if e + 1 in opt_begins else opt_state()
        same = [np.array_equal(a, b) for a, b in zip(after_opt, opt_ends[0])]
        assert all(same) if schedule == "authors" else not all(same), same
        assert int(after_opt[0]) == (1 if schedule == "authors" else e + 1)  # one batch (of 16) an epoch


def _tiny_two_task_model():
    """A few-parameter stand-in for MT-UNet (batch norm and dropout included): a 4×4 saliency map
    and 3 classes from a 4×4 image."""
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Dropout(0.25)(keras.layers.BatchNormalization()(keras.layers.Flatten()(inputs)))
    sal = SpatialSoftmax(name="saliency.out")(keras.layers.Reshape((4, 4, 1))(keras.layers.Dense(16)(flat)))
    cls = keras.layers.Dense(3, activation="softmax", name="disease.out")(flat)
    return keras.Model(inputs, {SALIENCY: sal, DISEASE: cls})


def _tiny_two_task_data(n=8):
    rng = np.random.default_rng(0)
    sal = rng.random((n, 4, 4, 1)).astype("float32")
    y = {"saliency": sal / sal.sum(axis=(1, 2, 3), keepdims=True),
         "label": np.eye(3, dtype="float32")[rng.integers(0, 3, n)]}
    return tf.data.Dataset.from_tensor_slices((rng.normal(size=(n, 4, 4, 1)).astype("float32"), y))


@pytest.mark.parametrize("schedule", ["authors", "package"])
def test_custom_loop_rlrp_resets_weights_sigma_and_optimizer(schedule):
    keras.utils.set_random_seed(0)
    net, ds = _tiny_two_task_model(), _tiny_two_task_data()
    weighting = mtl("mtl1", SALIENCY, DISEASE)
    optimizer = keras.optimizers.Adam(1e-9)
    snapshot = {}

    def spoil(epoch, record):
        if epoch == 0:  # after the best epoch was stored: remember it, then wreck the model and σ
            snapshot["weights"] = [v.numpy().copy() for v in net.variables]
            snapshot["sigma"] = [v.numpy() for v in weighting.trainable_variables]
            snapshot["optimizer"] = [np.array(v.numpy()) for v in optimizer_state(optimizer)]
            for v in net.trainable_variables:
                v.assign(v * 50.0 + 1.0)
            for v in weighting.trainable_variables:  # σ = e⁻³: the weighted loss grows too
                v.assign(-3.0)

    # P = 1: the package cuts on the first epoch without improvement (epoch 2), the authors' rule
    # on the second (epoch 3)
    cut = {"package": 1, "authors": 2}[schedule]
    config = FitConfig(epochs=cut + 1, steps_per_epoch={"joint": 1}, progress=False, restore_best=False,
                       **{**fit_config_kwargs(1, schedule), "stop_patience": None, "min_lr": 1e-12})
    out = fit("joint", {"model": net}, TASKS, ds.repeat().batch(4, drop_remainder=True), ds.batch(4), config,
              optimizers={"joint": optimizer}, weighting=weighting, joint_model=net,
              hooks=[*default_hooks(config), EpochCallback(spoil)])
    assert [h["lr_cut"] for h in out["history"]] == [e == cut for e in range(cut + 1)], out["stopped"]
    last = out["history"][cut]
    assert last["lr_cut"] and last["reset"] and last["lr"] == pytest.approx(1e-9)
    for v, w in zip(net.variables, snapshot["weights"]):
        if "seed_generator" not in v.path:  # dropout's generator runs on; only weights are reset
            np.testing.assert_allclose(v.numpy(), w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([v.numpy() for v in weighting.trainable_variables], snapshot["sigma"], atol=1e-6)
    assert {"sigma_saliency", "sigma_disease"} <= set(out["history"][0])
    assert out["schedule"][ALL_TASKS]["lr"] == pytest.approx(1e-10)
    # the authors' code also reloads the best epoch's optimizer: Adam's moments and its step count
    state = [np.array(v.numpy()) for v in optimizer_state(optimizer)]
    assert int(state[0]) == (1 if schedule == "authors" else cut + 1)  # one step an epoch
    same = [np.array_equal(a, b) for a, b in zip(state, snapshot["optimizer"])]
    assert all(same) if schedule == "authors" else not all(same), same
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-10)  # the cut's rate, not the best epoch's


@pytest.mark.parametrize("schedule", ["authors", "package"])
def test_rlrp_monitors_the_weighted_validation_loss(schedule):
    """The authors' code watches the loss it optimises, σ terms included (MTL1:
    L_s/σ_s² + ln(σ_s+1) + L_c/σ_c² + ln(σ_c+1) on the validation losses); the package's rule the
    unweighted sum L_s + L_c."""
    keras.utils.set_random_seed(0)
    ds = _tiny_two_task_data()
    net, weighting = _tiny_two_task_model(), mtl("mtl1", SALIENCY, DISEASE)
    config = FitConfig(epochs=3, steps_per_epoch={"joint": 2}, progress=False, restore_best=False,
                       **fit_config_kwargs(5, schedule))
    out = fit("joint", {"model": net}, TASKS, ds.repeat().batch(4, drop_remainder=True), ds.batch(4), config,
              optimizers={"joint": keras.optimizers.Adam(0.3)}, weighting=weighting, joint_model=net)
    h = pd.DataFrame(out["history"])
    weighted = [r.val_saliency / r.sigma_saliency**2 + math.log(r.sigma_saliency + 1)
                + r.val_disease / r.sigma_disease**2 + math.log(r.sigma_disease + 1) for r in h.itertuples()]
    assert not np.allclose(h.sigma_saliency, 1.0)  # σ moved, so the two values differ beyond ln 2 terms
    watched = weighted if schedule == "authors" else list(h.val_total)
    assert out["schedule"][ALL_TASKS]["best"] == pytest.approx(min(watched), rel=1e-5)
    assert out["best_epoch"] == {ALL_TASKS: int(np.argmin(watched)) + 1}
    if schedule == "authors":
        assert list(h.val_weighted) == pytest.approx(weighted, rel=1e-5)
    else:
        assert "val_weighted" not in h


def test_saliency_metrics_equal_hand_computed_values():
    t = np.array([[0.5, 0.5], [0.0, 0.0]])
    p = np.array([[0.4, 0.3], [0.2, 0.1]])
    m = metrics.saliency(t[None], p[None])
    assert m["kld"] == pytest.approx(0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.3), rel=1e-9)
    assert m["hs"] == pytest.approx(0.7)
    # centred: (.25, .25, -.25, -.25) · (.15, .05, -.05, -.15) = 0.1; norms 0.5 and √0.05
    assert m["cc"] == pytest.approx(0.1 / (0.5 * math.sqrt(0.05)))
    # maps are normalised first; the median is over images
    two = metrics.saliency(np.stack([t, t]) * 3, np.stack([p, t]))
    assert two["hs"] == pytest.approx((0.7 + 1.0) / 2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import os
    root = tmp_path_factory.mktemp("mt")
    os.environ["UMS_REP_CACHE"] = str(root / "cache")
    assert main(["--preset", "tiny", "--scheme", "mtl1", "--seeds", "2", "--epochs", "3", "--out",
                 str(root / "mtl1"), "--no-progress"]) == 0
    assert main(["--preset", "tiny", "--model", "unetc", "--out", str(root / "unetc"), "--no-progress"]) == 0
    return root


def test_train_writes_results_with_median_and_std(tiny_run):
    r = json.loads((tiny_run / "mtl1" / "results.json").read_text())
    (entry,) = r["tasks"].values()
    assert entry["label"] == "MT-UNet (MTL1)" and len(entry["per_seed"]) == 2
    assert {"kld", "cc", "hs", "accuracy"} <= set(entry["metrics"]) and set(entry["std"]) == set(entry["metrics"])
    seeds = [s["metrics"]["kld"] for s in entry["per_seed"]]
    assert entry["metrics"]["kld"] == pytest.approx(np.median(seeds))
    assert entry["std"]["kld"] == pytest.approx(np.std(seeds, ddof=1))
    # where the paper is silent, the authors' public code's RLRP by default, and the paper's loss form
    assert r["config"]["loss_form"] == "paper"
    assert r["config"]["rlrp"] == {"schedule": "authors", "patience": 1, "factor": 0.1, "min_lr": 1e-8,
                                   "stop_patience": 5, "cut_rule": "exceed", "monitor": "weighted",
                                   "reset": "weights, sigma and optimizer state"}
    assert "--schedule authors --loss-form paper" in r["command"]
    h = pd.read_csv(tiny_run / "mtl1" / "seed0" / "history.csv")
    assert {"train_saliency", "val_disease", "sigma_saliency", "sigma_disease", "lr", "lr_cut",
            "val_weighted"} <= set(h.columns)
    assert not np.allclose(h.sigma_saliency, 1.0)  # σ is trained
    for f in ("training_curves.png", "saliency_overlays.png", "model.keras", "predictions_test.csv"):
        assert (tiny_run / "mtl1" / "seed0" / f).stat().st_size > 0


def test_a_trained_mt_unet_beats_uniform_saliency_and_the_majority_class(tmp_path, monkeypatch):
    """Every arm learns (issue 30): MT-UNet (MTL3) trained at the quick size (one seed, 8 epochs) predicts
    gaze better than a uniform map (median KLD on the test images) and the disease class better
    than always answering the training split's majority class — what a model that did not train
    cannot do (the tiny size does not beat the uniform map: its 64×48 maps are nearly flat)."""
    from data_prep.egd import CLASSES
    from mt_unet.scoring import predict
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))  # restored for the module's other tests
    assert main(["--preset", "quick", "--scheme", "mtl3", "--seeds", "1", "--epochs", "8", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    model_file = tmp_path / "run" / "seed0" / "model.keras"
    model = keras.models.load_model(model_file, safe_mode=True)
    settings = data.evaluation_settings(model_file, model.input.shape[1:3])
    prepared = data.egd_data(settings.data, settings.preset, settings.shape, settings.seed)
    outs, truths = predict(model, prepared, prepared.rows("test"))
    uniform = np.ones_like(outs[SALIENCY])
    learned_kld = metrics.saliency(truths["saliency"], outs[SALIENCY])["kld"]
    uniform_kld = metrics.saliency(truths["saliency"], uniform)["kld"]
    # (8 epochs reach about 0.46 against the uniform map's 1.20; an untrained model scores near uniform)
    assert learned_kld < 0.75 * uniform_kld, (learned_kld, uniform_kld)
    train_labels = [str(v) for v in prepared.rows("train")["label"]]
    majority = max(set(train_labels), key=train_labels.count)
    accuracy = float(np.mean(outs[DISEASE].argmax(1) == truths["label"]))
    majority_accuracy = float(np.mean(truths["label"] == list(CLASSES).index(majority)))
    assert accuracy > majority_accuracy, (accuracy, majority, majority_accuracy)
    # the run records the same check on the validation split, which the claims read (mt_unet.claims.learned)
    record = json.loads((tmp_path / "run" / "seed0" / "seed_results.json").read_text())
    assert record["learned_on_validation"] == {SALIENCY: True, DISEASE: True}
    val_outs, val_truths = predict(model, prepared, prepared.rows("val"))
    chance = record["chance_on_validation"]
    assert chance["kld"] == pytest.approx(metrics.saliency(val_truths["saliency"], np.ones_like(val_outs[SALIENCY]))["kld"])
    assert chance["accuracy"] == pytest.approx(np.bincount(val_truths["label"]).max() / len(val_truths["label"]))
    assert record["val_metrics"]["kld"] < chance["kld"] and record["val_metrics"]["accuracy"] > chance["accuracy"]


def test_learned_means_beating_chance_on_both_tasks():
    from mt_unet.scoring import chance_levels, learned
    sal = np.random.default_rng(0).random((6, 8, 6, 1))
    chance = chance_levels({"saliency": sal, "label": np.array([0, 0, 0, 1, 2, 2])})
    assert chance["accuracy"] == 0.5 and chance["kld"] > 0
    assert learned({"accuracy": 0.6, "kld": chance["kld"] - 0.01}, chance) == {DISEASE: True, SALIENCY: True}
    assert learned({"accuracy": 0.5, "kld": chance["kld"]}, chance) == {DISEASE: False, SALIENCY: False}
    assert learned({"accuracy": 0.9}, chance) == {DISEASE: True}  # a classifier has no saliency map


def test_evaluate_reproduces_the_training_runs_test_metrics(tiny_run):
    assert evaluate_main([str(tiny_run / "mtl1" / "seed0" / "model.keras"), "--preset", "tiny",
                          "--out", str(tiny_run / "eval")]) == 0
    got = json.loads((tiny_run / "eval" / "results.json").read_text())["metrics"]
    want = json.loads((tiny_run / "mtl1" / "seed0" / "seed_results.json").read_text())["metrics"]
    assert got == pytest.approx(want, rel=1e-5)


def test_predict_reads_the_runs_model_config(tiny_run, tmp_path):
    """Issue 28: the run folder says what its models are (model_config.json: the seeds' model files,
    their output keys, the letter-box, the normaliser); without args.json and results.json a copy
    of it predicts the same as the folder read by its command (before that file), seed by seed."""
    import shutil

    from ums_rep.predict import main as predict
    run = tiny_run / "mtl1"
    config = json.loads((run / "model_config.json").read_text())
    assert config["command"] == "mt_unet.train" and config["input"] == {"shape": [64, 48, 1], "geometry": "letterbox"}
    assert config["tasks"]["disease"]["classes"] == list(TASKS[DISEASE].classes) and not config["cross_validated"]
    assert [(e["seed"], e["fold"], e["normalizer"], e["models"]) for e in config["folds"]] == [
        (k, None, "normalizer.json", {f"seed{k}/model.keras": {SALIENCY: SALIENCY, DISEASE: DISEASE}}) for k in (0, 1)]
    image = str(min((tiny_run / "cache").rglob("*.png")))
    bare, legacy = tmp_path / "bare", tmp_path / "legacy"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("args.json", "results.json", "checkpoints"))
    shutil.copytree(run, legacy, ignore=shutil.ignore_patterns("model_config.json", "checkpoints"))
    probs = [f"disease_p_{c}" for c in TASKS[DISEASE].classes]
    for given in ("", "seed1"):
        got = {}
        for name, folder in (("bare", bare), ("legacy", legacy)):
            out = tmp_path / f"pred-{name}-{given}"
            assert predict(["--model", str(folder / given), image, "--out", str(out)]) == 0
            assert json.loads((out / "predict.json").read_text())["model_files"] == [
                str(folder / (given or "seed0") / "model.keras")]
            got[name] = (pd.read_csv(out / "predictions.csv")[probs].to_numpy(float),
                         cv2.imread(str(next(out.glob("*_saliency.png"))), cv2.IMREAD_UNCHANGED))
        np.testing.assert_allclose(got["bare"][0], got["legacy"][0], atol=1e-6)
        assert np.array_equal(got["bare"][1], got["legacy"][1])


def test_evaluate_scores_on_the_data_the_model_was_trained_on(tiny_run, tmp_path, caplog):
    """Issue 17 item 4: without --preset, a tiny-preset model is scored on the tiny data its run
    recorded (args.json), not on the quick preset's; an explicit --preset of another input size is
    refused in one line, before any folder is written."""
    model = tiny_run / "unetc" / "seed0" / "model.keras"
    assert evaluate_main([str(model), "--out", str(tmp_path / "own")]) == 0
    got = json.loads((tmp_path / "own" / "results.json").read_text())
    want = json.loads((tiny_run / "unetc" / "seed0" / "seed_results.json").read_text())["metrics"]
    assert got["metrics"] == pytest.approx(want, rel=1e-5)
    assert got["preset"] == "tiny" and got["seed"] == 0 and got["settings_from"] == f"{tiny_run / 'unetc'}/args.json"
    assert got["prepared"] == json.loads((tiny_run / "unetc" / "results.json").read_text())["config"]["prepared"]
    caplog.clear()
    assert evaluate_main([str(model), "--preset", "quick", "--out", str(tmp_path / "quick")]) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line == (f"{model}: the model takes 64x48 images, --preset quick prepares 96x64 (trained with --preset "
                    f"tiny, {tiny_run / 'unetc'}/args.json); leave out --preset or give the one it was trained with")
    assert not (tmp_path / "quick").exists()


def test_a_model_file_outside_its_run_takes_the_preset_of_its_input_size(tiny_run, tmp_path):
    import shutil
    bare = tmp_path / "model.keras"
    shutil.copy(tiny_run / "unetc" / "seed0" / "model.keras", bare)
    assert data.trained_run(bare) is None and data.trained_run(tiny_run / "unetc" / "seed0" / "model.keras")
    s = data.evaluation_settings(bare, (64, 48))
    assert (s.preset, s.data, s.seed, s.shape) == ("tiny", None, 0, (64, 48))
    assert data.evaluation_settings(bare, (64, 48), preset="tiny", seed=3).seed == 3
    with pytest.raises(ValueError, match=r"model.keras: no mt_unet.train run folder .* 32x32 images; give --preset"):
        data.evaluation_settings(bare, (32, 32))


def test_the_parsers_name_the_presets_the_tables_define():
    from data_prep.cli import PRESETS
    from mt_unet import schedule, train
    from ums_rep import weighting
    from mt_unet.presets import MT_UNET
    from ums_rep.presets import UMS_REP
    assert tuple(MT_UNET) == tuple(UMS_REP) == PRESETS
    assert train.SCHEDULES == tuple(schedule.SCHEDULES) and train.LOSS_FORMS == weighting.LOSS_FORMS
    assert f"quick {MT_UNET['quick']['base']} and tiny {MT_UNET['tiny']['base']}" in baselines.__doc__


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_reproduce_gives_every_mt_unet_model_the_same_budget(preset, tmp_path):
    """reproduce.sh's MT-UNet block, run with a step() that prints each command: every model of
    Tables 1-3 gets the same seeds and epochs (and the preset's patience and early stopping)."""
    import subprocess
    from pathlib import Path
    text = (Path(__file__).parents[2] / "reproduce.sh").read_text()
    block = text[text.index("# MT-UNet:"):text.index('"$PY" -m mt_unet.train --compare')]
    script = f'PRESET={preset}; ONLY=all; OUT={tmp_path}; DATA=(); step() {{ shift; echo "$*"; }}\n{block}\nfi'
    lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    # Tables 1-3's models (InceptionResNetV2 and EfficientNetV2-S at the paper preset only) and MTL3 with
    # the authors' saliency term
    assert len(lines) == {"quick": 12, "paper": 14}[preset] and any("--model resnet50" in line for line in lines)
    assert sum("--loss-form authors" in line for line in lines) == 1

    def budget(line):
        words = line.split()
        return {k: words[words.index(k) + 1] for k in ("--seeds", "--epochs", "--patience") if k in words}
    assert len({tuple(sorted(budget(line).items())) for line in lines}) == 1, lines
    assert budget(lines[0]) == ({"--seeds": "5", "--epochs": "10"} if preset == "quick" else {})


def test_compare_puts_models_side_by_side(tiny_run):
    text = compare([tiny_run / "mtl1", tiny_run / "unetc"], tiny_run / "cmp")
    assert "MT-UNet (MTL1)" in text and "UNetC" in text and "KLD ↓" in text
    unetc_row = [line for line in text.splitlines() if line.startswith("| UNetC")][0]
    assert unetc_row.split("|")[2].strip() == ""  # UNetC predicts no saliency


def test_bad_arguments_fail_before_training(tmp_path, caplog):
    assert main(["--preset", "tiny", "--model", "resnet50", "--variant", "top", "--out", str(tmp_path / "x")]) == 1
    assert "applies to mtunet only" in caplog.text
    assert not (tmp_path / "x").exists()
    assert main(["--preset", "tiny", "--model", "unetc", "--loss-form", "authors", "--out", str(tmp_path / "y")]) == 1
    assert "--loss-form authors applies to the MTL schemes of a two-task model only" in caplog.text
    assert not (tmp_path / "y").exists()


def test_the_report_command_finds_mt_unet_runs_through_the_plugin(tiny_run):
    """``python -m ums_rep.report`` (a fresh process, the module run as __main__) reads MT-UNet runs:
    the kinds MT-UNet's plugin registers must reach the copy of the module the command runs."""
    import subprocess
    import sys
    out = tiny_run / "report-cli"
    proc = subprocess.run([sys.executable, "-m", "ums_rep.report", "--runs", str(tiny_run / "mtl1"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MT-UNet Tables 1–3" in (out / "report.md").read_text()


def test_report_puts_runs_beside_the_paper_and_inlines_figures(tiny_run):
    from ums_rep.report import main as report_main
    out = tiny_run / "report"
    assert report_main(["--runs", str(tiny_run / "mtl1"), str(tiny_run / "unetc"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    rows = table_rows(md)
    assert "MT-UNet (MTL1)" in [r[0] for r in rows] and ["*paper*", "0.730", "0.566", "0.547", "0.649"] in [r[:5] for r in rows]
    assert "**Data:** phantom" in md and "tiny" in md and "TensorFlow 2." in md
    assert "![training_curves.png]" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html and 'src="../' not in html


def test_scheme_dwa_trains_mt_unet_with_dynamic_weight_average(tiny_run):
    """--scheme dwa: a registered weighting rule reaches MT-UNet's loop unchanged."""
    out = tiny_run / "dwa"
    assert main(["--preset", "tiny", "--scheme", "dwa", "--seeds", "1", "--epochs", "3", "--out", str(out),
                 "--no-progress", "--schedule", "package"]) == 0
    r = json.loads((out / "results.json").read_text())
    (entry,) = r["tasks"].values()
    assert entry["label"] == "MT-UNet (DWA)"
    # --schedule package: the package's earlier RLRP, recorded
    assert {k: r["config"]["rlrp"][k] for k in ("schedule", "cut_rule", "monitor", "reset")} == {
        "schedule": "package", "cut_rule": "reach", "monitor": "sum", "reset": "weights and sigma"}
    h = pd.read_csv(next(out.glob("seed*/history.csv")))
    assert "val_weighted" not in h
    cols = sorted(c for c in h if c.startswith("weight_"))
    assert len(cols) == 2 and len(h) == 3
    assert np.allclose(h.loc[:1, cols].to_numpy(), 1.0) and np.isclose(h.loc[2, cols].sum(), 2.0)
