"""Strategies on the shared encoder, the finetune and compare commands, and derived tasks."""
import json
import subprocess
from pathlib import Path
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras
from tests.helpers import table_rows
from ums_rep.backbones import cdae
from ums_rep.derive import grad_cam, recommend
from ums_rep.experiment import fold_models
from ums_rep.finetune import main
from ums_rep.models import build_shared
from ums_rep.tasks import TASK_SETS
from ums_rep.strategies import FitConfig, fit
from ums_rep.weighting import FixedWeights

TASK_SPECS = {s.task.name: s for d in TASK_SETS.values() for s in d["tasks"]}


def _data(n=32, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    y = {"mask": (x > 0).astype("float32"), "label": np.eye(2, dtype="float32")[(x.mean((1, 2, 3)) > 0).astype(int)]}
    return tf.data.Dataset.from_tensor_slices((x, y))


def _shared(strategy_name):
    """Models of one cxr-hetero fold built as a run builds them (``experiment.fold_models``)."""
    keras.utils.set_random_seed(0)
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    models, enc_layers = fold_models(strategy_name, cdae((32, 32, 1)), "cxr", specs, {}, None,
                                     tf.distribute.get_strategy())
    tasks = {s.task.name: s.task for s in specs}
    return models, enc_layers, tasks


def _run(strategy_name, weighting=None):
    models, enc_layers, tasks = _shared(strategy_name)
    ds = _data()
    enc_before = [w.numpy().copy() for l in enc_layers for w in l.weights]
    heads_before = {t: [w.numpy().copy() for w in m.trainable_weights[-2:]] for t, m in models.items()}
    fit(strategy_name, models, tasks, {t: ds.repeat().batch(8, drop_remainder=True) for t in tasks},
        {t: ds.batch(8) for t in tasks}, FitConfig(epochs=1, steps_per_epoch={t: 2 for t in tasks},
                                                   progress=False, restore_best=False,
                                                   shared_optimizer=("adam", 1e-3)), weighting=weighting)
    enc_after = [w.numpy() for l in enc_layers for w in l.weights]
    enc_changed = any(not np.array_equal(a, b) for a, b in zip(enc_before, enc_after))
    heads_changed = {t: any(not np.array_equal(a, b.numpy()) for a, b in zip(heads_before[t], m.trainable_weights[-2:]))
                     for t, m in models.items()}
    return enc_changed, heads_changed


def test_joint_uses_the_weights_given():
    enc_changed, heads_changed = _run("joint", FixedWeights({"lung_seg": 0.0, "abnormal": 1.0}))
    assert enc_changed and heads_changed["abnormal"] and not heads_changed["lung_seg"]


def test_segmentation_head_starts_from_the_cdae_decoder():
    backbone = cdae((32, 32, 1))
    models, _ = build_shared(backbone, "cxr", TASK_SETS["cxr-hetero"]["tasks"])
    np.testing.assert_array_equal(models["lung_seg"].get_layer("lung_seg.dec2.conv").get_weights()[0],
                                  backbone.get_layer("cdae.dec2.conv").get_weights()[0])


MIRRORED = textwrap.dedent('''
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from ums_rep.backbones import echo_encoder
    from ums_rep.models import build_shared
    from ums_rep.tasks import TASK_SETS
    from ums_rep.strategies import FitConfig, fit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 1)).astype("float32")
    y = {"label": np.eye(2, dtype="float32")[rng.integers(0, 2, 16)]}
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    out = {}
    # one MirroredStrategy for the process: several instances collide on collective keys
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for strategy_name in ("independent", "alternating", "joint"):
        for devices in (1, 2):
            dist = mirrored if devices == 2 else tf.distribute.get_strategy()
            keras.utils.set_random_seed(0)
            specs = TASK_SETS["echo-homo"]["tasks"]
            with dist.scope():
                models, enc = build_shared(echo_encoder((32, 32, 1), strides=2), "echo", specs)
                if strategy_name == "independent":
                    for layer in enc:
                        layer.trainable = False
                for m in models.values():  # dropout masks differ per replica: switch it off here
                    for layer in m.layers:
                        if isinstance(layer, keras.layers.Dropout):
                            layer.rate = 0.0
            tasks = {s.task.name: s.task for s in specs}
            # (each head its task's optimizer, the encoder Adam, as finetune trains them)
            fit(strategy_name, models, tasks, {t: ds.repeat().batch(8, drop_remainder=True) for t in tasks},
                {t: ds.batch(8) for t in tasks}, FitConfig(epochs=1, steps_per_epoch={t: 2 for t in tasks},
                progress=False, restore_best=False, shared_optimizer=("adam", 1e-3)), dist=dist)
            out[f"{strategy_name}{devices}"] = [float(np.sum(np.abs(w.numpy()))) for m in models.values() for w in m.weights]
    json.dump(out, sys.stdout)
''')


def test_every_strategy_gives_the_same_result_on_two_devices():
    """MirroredStrategy over two logical CPUs equals one device (within float tolerance)."""
    res = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("independent", "alternating", "joint"):
        # (atol: sums of |bias| of order 1e-5 differ in float32 round-off when gradients are summed)
        np.testing.assert_allclose(out[f"{name}1"], out[f"{name}2"], rtol=1e-4, atol=1e-7, err_msg=name)


def test_grad_cam_is_normalised_and_follows_the_evidence():
    """A classifier whose class-1 evidence is a bright square: Grad-CAM peaks on the square."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (64, 32, 32, 1)).astype("float32")
    y = np.zeros(64, int)
    for i in range(0, 64, 2):
        r, c = rng.integers(2, 24, 2)
        x[i, r:r + 6, c:c + 6] += 2.0
        y[i] = 1
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, verbose=0)
    heat = grad_cam(model, x[:8:2], "feat", class_index=1)
    assert heat.shape == (4, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    for k, i in enumerate(range(0, 8, 2)):
        r, c = np.unravel_index(np.argmax(x[i, ..., 0]), (32, 32))
        mask = np.zeros((32, 32), bool)
        rows, cols = np.nonzero(x[i, ..., 0] > 1.0)
        mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert heat[k][mask].mean() > 2 * heat[k][~mask].mean()


def test_recommendation_keeps_good_tr_only():
    flow = np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    quality = np.array([[0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    assert recommend(flow, quality).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="unknown flow"):
        recommend(flow, quality, flow="AV")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    import os
    root = tmp_path_factory.mktemp("ft")
    os.environ["UMS_REP_CACHE"] = str(root / "cache")
    assert main(["--strategy", "independent", "--tasks", "echo-hetero", "--preset", "tiny", "--out",
                 str(root / "independent"), "--no-progress"]) == 0
    enc = root / "independent" / "encoder" / "model.keras"
    assert main(["--strategy", "baseline", "--tasks", "echo-hetero", "--preset", "tiny", "--encoder", str(enc),
                 "--out", str(root / "baseline"), "--no-progress"]) == 0
    return root


def test_finetune_cli_writes_results(tiny_runs):
    r = json.loads((tiny_runs / "independent" / "results.json").read_text())
    assert set(r["tasks"]) == {"envelope_seg", "flow", "quality"} and r["source"]["role"] == "shared encoder"
    assert {"iou", "f_score", "accuracy"} <= set(r["tasks"]["envelope_seg"]["metrics"])
    assert {"accuracy", "f_score", "mcc"} <= set(r["tasks"]["flow"]["metrics"])
    test = pd.read_csv(Path(r["config"]["prepared"]["test"]) / "manifest.csv")
    test = test[test.split == "test"]
    for t, entry in r["tasks"].items():
        p = pd.read_csv(tiny_runs / "independent" / f"predictions_{t}.csv")
        rows = TASK_SPECS[t].select(test)
        assert sorted(p["id"].astype(str)) == sorted(rows["id"].astype(str))  # one row per test image
        if "correct" in p:  # McNemar's column: truth == prediction, its mean the reported accuracy
            assert (p["correct"] == (p["truth"] == p["pred"])).all()
            assert p["correct"].mean() == pytest.approx(entry["metrics"]["accuracy"])
            column = TASK_SPECS[t].label_column
            assert (p["truth"] == rows.set_index(rows["id"].astype(str)).loc[p["id"].astype(str), column]
                    .astype(str).map({c: i for i, c in enumerate(TASK_SPECS[t].task.classes)}).to_numpy()).all()
        else:  # segmentation: per-image Dice and both IoUs (foreground ≤ Dice)
            assert {"dice", "iou", "iou_mean"} <= set(p) and (p["iou"] <= p["dice"] + 1e-9).all()
    assert {"iou", "iou_mean"} <= set(r["tasks"]["envelope_seg"]["metrics"])
    records = r["config"]["fold_records"]
    assert all(set(f["seconds"]) == set(r["tasks"]) and set(f["val_metrics"]) == set(r["tasks"]) for f in records)
    assert sum(f["seconds"]["flow"] for f in records) == pytest.approx(r["tasks"]["flow"]["train_seconds"])
    rec = pd.read_csv(tiny_runs / "independent" / "recommendation.csv")
    assert rec.recommended.dtype == bool and (rec.recommended <= (rec.flow_pred == "TR")).all()
    assert (tiny_runs / "independent" / "gradcam_flow.png").is_file()


def test_baseline_builds_one_model_per_task(tiny_runs):
    files = sorted(p.name for p in (tiny_runs / "baseline").glob("model_*.keras"))
    assert files == ["model_envelope_seg.keras", "model_flow.keras", "model_quality.keras"]
    base = json.loads((tiny_runs / "baseline" / "results.json").read_text())
    ind = json.loads((tiny_runs / "independent" / "results.json").read_text())
    # three separate encoders against one shared source model plus three heads
    assert base["total_params"] > ind["total_params"] > ind["source"]["trainable_params"]


def test_compare_table_has_mcnemar(tiny_runs, capsys):
    from ums_rep import metrics
    ind_dir, base_dir = tiny_runs / "independent", tiny_runs / "baseline"
    assert main(["--compare", str(ind_dir), str(base_dir), "--out", str(tiny_runs / "cmp")]) == 0
    text = (tiny_runs / "cmp" / "compare.md").read_text()
    rows = table_rows(text)
    assert "Table 7: echo-hetero" in text and "params / baseline" in text and "source model + heads" in text
    # the p-value is McNemar's on the two runs' predictions joined by image id (rows shuffled in one)
    a = pd.read_csv(ind_dir / "predictions_flow.csv")
    b = pd.read_csv(base_dir / "predictions_flow.csv").sample(frac=1.0, random_state=0)
    joined = a.merge(b, on="id", suffixes=("_a", "_b"))
    assert len(joined) == len(a) == len(b)
    expected = metrics.mcnemar(joined["correct_a"], joined["correct_b"])
    row = next(r for r in rows if r[:2] == ["flow", "independent vs baseline"])
    assert row[2] == "McNemar (exact)" and float(row[4].rstrip(" *")) == pytest.approx(expected["p_value"], rel=1e-2)
    assert row[5] == f"{expected['table'][0][1]} / {expected['table'][1][0]}"
    seg = next(r for r in rows if r[:2] == ["envelope_seg", "independent vs baseline"])
    assert seg[2] == "Wilcoxon"
    # the claims of echo-hetero are the paper's pairs: independent vs joint and vs the baseline
    claims = json.loads((tiny_runs / "cmp" / "claims.json").read_text())
    ours = {(c["task"], c["a"], c["b"]): c for c in claims if c["task_set"] == "echo-hetero"}
    assert ("flow", "independent", "baseline") in ours and ("flow", "independent", "joint") in ours
    assert ours[("flow", "independent", "joint")]["verdict"] == "not run"  # no joint run here
    assert ours[("flow", "independent", "baseline")]["p"] == pytest.approx(expected["p_value"])
    ind = json.loads((ind_dir / "results.json").read_text())
    assert "accuracy " + f"{ind['tasks']['flow']['fold_mean']['accuracy']:.3f} ± " in text  # per-fold spread


def test_bad_weights_name_the_tasks(tmp_path, caplog):
    assert main(["--strategy", "joint", "--tasks", "echo-homo", "--preset", "tiny", "--out", str(tmp_path),
                 "--encoder", str(tmp_path / "none.keras"), "--weights", '{"nope": 1}']) == 1
    assert "unknown task(s) ['nope']" in caplog.text and "mv_vs_ma" in caplog.text


def test_grad_cam_is_highest_on_the_phantom_finding():
    """A head trained on phantom CXRs (bacterial consolidation vs normal) looks at the finding."""
    from data_prep.phantoms.cxr import render_cxr
    from ums_rep.heads import classification_head
    size, n = 64, 160
    phantoms = [render_cxr(i, (size, size), "bacterial" if i % 2 else "normal",
                           severity=0.9 if i % 2 else None) for i in range(n)]
    x = np.array([p.image for p in phantoms])[..., None]
    x = ((x - x.mean()) / x.std()).astype("float32")
    y = np.arange(n) % 2
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 1))
    h = inp
    for i, f in enumerate((16, 32, 64)):
        h = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"c{i}")(h)
        if i < 2:
            h = keras.layers.MaxPooling2D()(h)
    model = keras.Model(inp, classification_head(h, 2, name="cls", dropout=0.0, units=32))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:120], y[:120], epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x[120:], y[120:], verbose=0)[1] > 0.6
    ill = [i for i in range(120, n) if y[i] == 1]
    heat = grad_cam(model, x[ill], "c2", class_index=1)
    ratios = [heat[k][phantoms[i].finding_mask > 0].mean() / heat[k][phantoms[i].finding_mask == 0].mean()
              for k, i in enumerate(ill)]
    assert np.median(ratios) > 1.3, ratios


def test_joint_with_dynamic_weight_average(tiny_runs):
    """--weighting dwa reaches the loop: weights 1 for two epochs, then Eq. 1's, summing to K."""
    enc = tiny_runs / "independent" / "encoder" / "model.keras"
    out = tiny_runs / "dwa"
    assert main(["--strategy", "joint", "--tasks", "echo-homo", "--preset", "tiny", "--encoder", str(enc),
                 "--weighting", "dwa", "--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["config"]["weighting"] == "dwa"
    h = pd.read_csv(out / "history_fold0.csv")
    cols = [c for c in h if c.startswith("weight_")]
    assert len(cols) == 3 and len(h) >= 3
    assert np.allclose(h.loc[:1, cols].to_numpy(), 1.0)
    assert np.isclose(h.loc[2, cols].sum(), 3.0) and not np.allclose(h.loc[2, cols].to_numpy(), 1.0)


def test_fixed_weights_refused_with_a_learned_weighting(tmp_path, caplog):
    assert main(["--strategy", "joint", "--tasks", "echo-homo", "--preset", "tiny", "--out", str(tmp_path),
                 "--weighting", "dwa", "--weights", '{"flow": 1}']) == 1
    assert "--weighting dwa learns its own" in caplog.text
