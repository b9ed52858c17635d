"""MT-UNet: model outputs, MTL1/2/3 losses and their equilibrium, RLRP with reset, saliency
metrics, and the train / evaluate / compare commands at a tiny size."""
import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mt_unet import baselines, data
from mt_unet.evaluate import main as evaluate_main
from mt_unet.model import DISEASE, SALIENCY, TASKS, build, mt_unet
from mt_unet.schedule import ResetOnPlateau, fit_config_kwargs
from mt_unet.train import compare, main
from tests.helpers import table_rows
from ums_rep import metrics
from ums_rep.losses import categorical_crossentropy, kld
from ums_rep.strategies import FitConfig, fit
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


def test_keras_callback_cuts_the_rate_and_restores_the_best_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    cb = ResetOnPlateau(patience=2)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    best = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in best])
    cb.on_epoch_end(1, {"val_loss": 2.0})  # one epoch without improvement: nothing yet
    assert not np.allclose(model.get_weights()[0], best[0])
    logs = {"val_loss": 3.0}
    cb.on_epoch_end(2, logs)  # P = 2 epochs: cut by 90% and reset to epoch 0
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)
    assert logs["lr"] == pytest.approx(1e-3)
    assert cb.events == [{"epoch": 2, "lr": pytest.approx(1e-3), "reset_to": 0}]
    for e in range(3, 3 + 2 * 2 + 3):
        cb.on_epoch_end(e, {"val_loss": 3.0})
    assert model.stop_training  # 2P + 3 epochs without improvement


def test_keras_callback_works_inside_model_fit():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    ends, begins, val = {}, {}, []

    class Recorder(keras.callbacks.Callback):  # runs before ResetOnPlateau: sees each epoch's own weights
        def on_epoch_begin(self, epoch, logs=None):
            begins[epoch] = [w.copy() for w in self.model.get_weights()]

        def on_epoch_end(self, epoch, logs=None):
            ends[epoch] = [w.copy() for w in self.model.get_weights()]
            val.append(logs["val_loss"])

    cb = ResetOnPlateau(patience=1)
    # the validation target is unreachable and drifts away, so validation never improves after epoch 0
    hist = model.fit(x, x[:, :1], validation_data=(x, x[:, :1] * 0 + 100), epochs=4, verbose=0,
                     callbacks=[Recorder(), cb])
    assert val == pytest.approx(hist.history["val_loss"])
    assert int(np.argmin(val)) == 0, val  # the best epoch
    # P = 1: every epoch after the best one cuts the rate by 90% and resets to epoch 0
    assert cb.events == [{"epoch": e, "lr": pytest.approx(1e-2 * 0.1 ** e), "reset_to": 0} for e in (1, 2, 3)]
    assert hist.history["lr"] == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    for e in (1, 2, 3):  # the epoch trained away from the best weights; the reset brought them back
        assert not np.allclose(ends[e][0], ends[0][0])
        after = begins[e + 1] if e + 1 in begins else model.get_weights()
        for a, b in zip(after, ends[0]):
            np.testing.assert_array_equal(a, b)


def test_custom_loop_rlrp_resets_weights_and_sigma():
    keras.utils.set_random_seed(0)
    net, _ = build("mtunet", SHAPE, 3, base_filters=4)
    weighting = mtl("mtl1", SALIENCY, DISEASE)
    x, y = _batch(8)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    snapshot = {}

    def spoil(epoch, record):
        if epoch == 0:  # after the best epoch was stored: remember it, then wreck the model and σ
            snapshot["weights"] = [v.numpy().copy() for v in net.variables]
            snapshot["sigma"] = [v.numpy() for v in weighting.trainable_variables]
            for v in net.trainable_variables:
                v.assign(v * 50.0 + 1.0)
            for v in weighting.trainable_variables:
                v.assign(3.0)

    config = FitConfig(epochs=2, steps_per_epoch={"joint": 1}, progress=False, restore_best=False,
                       **{**fit_config_kwargs(1), "stop_patience": None})
    out = fit("joint", {"model": net}, TASKS, ds.repeat().batch(4, drop_remainder=True), ds.batch(4), config,
              optimizers={"joint": keras.optimizers.Adam(1e-9)}, weighting=weighting, joint_model=net,
              on_epoch_end=spoil)
    second = out["history"][1]
    assert second["lr_cut"] and second["reset"] and second["lr"] == pytest.approx(1e-9)
    for v, w in zip(net.variables, snapshot["weights"]):
        if "seed_generator" not in v.path:  # dropout's generator runs on; only weights are reset
            np.testing.assert_allclose(v.numpy(), w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose([v.numpy() for v in weighting.trainable_variables], snapshot["sigma"], atol=1e-6)
    assert {"sigma_saliency", "sigma_disease"} <= set(out["history"][0])
    assert out["schedule"]["lr"] == pytest.approx(1e-10)


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
    h = pd.read_csv(tiny_run / "mtl1" / "seed0" / "history.csv")
    assert {"train_saliency", "val_disease", "sigma_saliency", "sigma_disease", "lr", "lr_cut"} <= set(h.columns)
    assert not np.allclose(h.sigma_saliency, 1.0)  # σ is trained
    for f in ("training_curves.png", "saliency_overlays.png", "model.keras", "predictions_test.csv"):
        assert (tiny_run / "mtl1" / "seed0" / f).stat().st_size > 0


def test_evaluate_reproduces_the_training_runs_test_metrics(tiny_run):
    assert evaluate_main([str(tiny_run / "mtl1" / "seed0" / "model.keras"), "--preset", "tiny",
                          "--out", str(tiny_run / "eval")]) == 0
    got = json.loads((tiny_run / "eval" / "results.json").read_text())["metrics"]
    want = json.loads((tiny_run / "mtl1" / "seed0" / "seed_results.json").read_text())["metrics"]
    assert got == pytest.approx(want, rel=1e-5)


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
    from ums_rep.presets import MT_UNET, UMS_REP
    assert tuple(MT_UNET) == tuple(UMS_REP) == PRESETS


def test_compare_puts_models_side_by_side(tiny_run):
    text = compare([tiny_run / "mtl1", tiny_run / "unetc"], tiny_run / "cmp")
    assert "MT-UNet (MTL1)" in text and "UNetC" in text and "KLD ↓" in text
    unetc_row = [line for line in text.splitlines() if line.startswith("| UNetC")][0]
    assert unetc_row.split("|")[2].strip() == ""  # UNetC predicts no saliency


def test_bad_arguments_fail_before_training(tmp_path, caplog):
    assert main(["--preset", "tiny", "--model", "resnet50", "--variant", "top", "--out", str(tmp_path / "x")]) == 1
    assert "applies to mtunet only" in caplog.text
    assert not (tmp_path / "x").exists()


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
                 "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text())
    (entry,) = r["tasks"].values()
    assert entry["label"] == "MT-UNet (DWA)"
    h = pd.read_csv(next(out.glob("seed*/history.csv")))
    cols = sorted(c for c in h if c.startswith("weight_"))
    assert len(cols) == 2 and len(h) == 3
    assert np.allclose(h.loc[:1, cols].to_numpy(), 1.0) and np.isclose(h.loc[2, cols].sum(), 2.0)
