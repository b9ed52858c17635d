"""UMS-Rep's protocol invariants (what a fair strategy comparison needs): k distinct,
patient-level folds for every task set; each optimizer's own learning rate; per-task rules in
independent mode; every fold starting from the same pretrained encoder; training-only
normalisation of the external test set; costs that count the source model."""
import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_prep.io import read_image
from data_prep.splits import split_patients
from data_prep.transforms import MeanNormalizer
from ums_rep.backbones import cdae
from ums_rep.engine import Engine
from ums_rep.finetune import main
from ums_rep.hooks import EpochCallback
from ums_rep.models import build_shared, copy_model, weights_digest
from ums_rep.presets import UMS_REP
from ums_rep.strategies import ALL_TASKS, FitConfig, default_hooks, fit
from ums_rep.tasks import TASK_SETS, Task, cross_validation


def _manifest(n_patients=120, seed=0, labels=("normal", "tb"), kermany=False):
    """A prepared-style manifest: patients with 1–3 images, labels, a 70/20/10 patient split."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = labels[p % len(labels)]
        for k in range(int(rng.integers(1, 4))):
            rows.append({"id": f"p{p}_{k}", "patient_id": f"p{p}", "label": label, "flow_type": label,
                         "quality": "good" if p % 3 else "low", "mask": f"masks/p{p}_{k}.png",
                         "image": f"images/p{p}_{k}.png"})
    df = pd.DataFrame(rows)
    if kermany:  # a published test split, validation carved from train
        test = df.patient_id.isin([f"p{p}" for p in range(0, n_patients, 8)])
        df["split"] = "test"
        df.loc[~test, "split"] = split_patients(df[~test], (0.8, 0.2, 0.0), seed=seed)
    else:
        df["split"] = split_patients(df, "70/20/10", seed=seed)
    return df


SET_DATA = {
    "cxr-hetero": lambda: (_manifest(), _manifest(40, seed=1)),
    "cxr-homo": lambda: (_manifest(240, labels=("normal", "bacterial", "viral"), kermany=True),) * 2,
    "echo-hetero": lambda: (_manifest(400, labels=("MV", "MA", "TR")),) * 2,
    "echo-homo": lambda: (_manifest(400, labels=("MV", "MA", "TR")),) * 2,
}


@pytest.mark.parametrize("set_name", sorted(TASK_SETS))
@pytest.mark.parametrize("k", [3, 10])
def test_k_distinct_folds_cover_the_pool_once(set_name, k):
    train, test = SET_DATA[set_name]()
    cv = cross_validation(set_name, train, test, k, seed=0)
    assert cv.n_runs == cv.n_parts == k
    seen = []
    for fold in range(k):
        tr, va = cv.fold(fold)
        assert not set(tr.patient_id) & set(va.patient_id), "a patient in training and validation"
        assert len(tr) + len(va) == len(cv.pool) and len(va) > 0
        seen += list(va.index)
    assert sorted(seen) == sorted(cv.pool.index), "every pool image is validated exactly once"
    assert cv.pool.groupby("patient_id").cv_fold.nunique().max() == 1
    # every class is in every validation fold (stratified)
    assert all(cv.pool[cv.pool.cv_fold == f].label.nunique() == cv.pool.label.nunique() for f in range(k))
    # the pool and the test set are disjoint and come from where the paper takes them
    assert not set(cv.pool.patient_id) & set(cv.test.patient_id) or set_name == "cxr-hetero"
    expected_pool = {"cxr-hetero": train, "cxr-homo": train[train.split != "test"],
                     "echo-hetero": train[train.split == "val"], "echo-homo": train[train.split == "val"]}[set_name]
    assert sorted(cv.pool.index) == sorted(expected_pool.index)


def test_prepared_folds_are_independent_of_the_split(tmp_path, phantom_root):
    """prepare's ``fold`` column: every split part holds several folds (it was a copy of the split)."""
    from data_prep.preparation import prepare
    df = prepare("doppler", phantom_root / "doppler", tmp_path / "doppler", size=(32, 32), folds=3, progress=False)
    for part, rows in df.groupby("split"):
        assert rows.fold.nunique() == min(3, rows.patient_id.nunique()), part


def test_one_fold_is_a_hold_out_and_too_small_pools_are_refused():
    train, test = SET_DATA["cxr-hetero"]()
    cv = cross_validation("cxr-hetero", train, test, 1)
    tr, va = cv.fold(0)
    assert cv.n_runs == 1 and 0.15 < len(va) / len(cv.pool) < 0.25
    small = train[(train.label == "normal") | train.patient_id.isin(["p1", "p3", "p5"])]
    with pytest.raises(ValueError, match=r"shenzhen.*10 folds.*class 'tb' has 3"):
        cross_validation("cxr-hetero", small, test, 10)


# --------------------------------------------------------------------------- optimisation rules

def _two_task_setup():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    shared = keras.layers.Dense(8, activation="relu", name="shared")(inp)
    models = {t: keras.Model(inp, keras.layers.Dense(2, activation="softmax", name=f"{t}.out")(shared))
              for t in ("a", "b")}
    tasks = {"a": Task("a", "classification", ("x", "y"), optimizer="sgd", learning_rate=1e-2),
             "b": Task("b", "classification", ("x", "y"), optimizer="adam", learning_rate=1e-3)}
    rng = np.random.default_rng(0)
    ds = tf.data.Dataset.from_tensor_slices((rng.normal(size=(32, 8)).astype("float32"),
                                             {"label": np.eye(2, dtype="float32")[rng.integers(0, 2, 32)]}))
    return models, tasks, {t: ds.repeat().batch(8, drop_remainder=True) for t in tasks}, {t: ds.batch(8) for t in tasks}


def test_each_optimizer_keeps_its_own_learning_rate_after_a_cut(monkeypatch):
    """A plateau cut divides each optimizer's rate by ten: SGD 1e-2 → 1e-3 while Adam 1e-3 → 1e-4."""
    models, tasks, train, val = _two_task_setup()
    monkeypatch.setattr(Engine, "evaluate", lambda self, data: {"a": 1.0, "b": 1.0})  # a plateau from epoch 2
    out = fit("alternating", models, tasks, train, val,
              FitConfig(epochs=3, steps_per_epoch={"a": 2, "b": 2}, lr_patience=1, stop_patience=None, progress=False))
    assert out["history"][1]["lr_cut"]  # after epoch 2; the records give the rates each epoch trained with
    third = out["history"][2]
    assert third["lr_a"] == pytest.approx(1e-3, rel=1e-6) and third["lr_b"] == pytest.approx(1e-4, rel=1e-6)


def test_independent_tasks_have_their_own_plateau_and_early_stopping(monkeypatch):
    """Task a keeps improving, task b does not: b is cut and stopped (its head no longer trains)
    while a trains on with its rate untouched; each keeps its own best epoch."""
    models, tasks, train, val = _two_task_setup()
    for layer in models["a"].layers[:2]:
        layer.trainable = False  # independent: the shared encoder is frozen
    calls = {"n": 0}

    def evaluate(self, data):
        calls["n"] += 1
        return {"a": 1.0 / calls["n"], "b": 1.0}

    monkeypatch.setattr(Engine, "evaluate", evaluate)
    snapshots = []
    config = FitConfig(epochs=5, steps_per_epoch={"a": 2, "b": 2}, lr_patience=1, stop_patience=2, progress=False,
                       restore_best=False)
    out = fit("independent", models, tasks, train, val, config, hooks=[*default_hooks(config), EpochCallback(
        lambda e, r: snapshots.append(models["b"].get_layer("b.out").get_weights()[0].copy()))])
    assert out["best_epoch"] == {"a": 5, "b": 1}
    assert out["stopped"]["b"] == "early stopping" and out["stopped"]["a"] == "epochs"
    last = out["history"][-1]
    # b: cut at epochs 2 and 3 (patience 1), then stopped (2 epochs without improvement); a untouched
    assert last["lr_a"] == pytest.approx(1e-2, rel=1e-6) and last["lr_b"] == pytest.approx(1e-5, rel=1e-6)
    assert "train_b" not in last and "train_a" in last
    np.testing.assert_array_equal(snapshots[2], snapshots[-1])  # b stopped after epoch 3


def test_joint_and_alternating_keep_one_rule(monkeypatch):
    models, tasks, train, val = _two_task_setup()
    monkeypatch.setattr(Engine, "evaluate", lambda self, data: {"a": 1.0, "b": 1.0})
    out = fit("alternating", models, tasks, train, val,
              FitConfig(epochs=4, steps_per_epoch={"a": 1, "b": 1}, lr_patience=5, stop_patience=2, progress=False))
    assert out["best_epoch"] == {ALL_TASKS: 1} and out["stopped"] == {ALL_TASKS: "early stopping"}
    assert len(out["history"]) == 3


def test_folds_share_no_encoder_variables():
    backbone = cdae((32, 32, 1))
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    m1, enc1 = build_shared(copy_model(backbone), "cxr", specs)
    m2, enc2 = build_shared(copy_model(backbone), "cxr", specs)
    d = weights_digest([w for layer in enc1 for w in layer.weights])
    assert d == weights_digest([w for layer in enc2 for w in layer.weights])
    enc1[0].weights[0].assign(enc1[0].weights[0] + 1.0)  # training fold 1 ...
    assert weights_digest([w for layer in enc2 for w in layer.weights]) == d  # ... leaves fold 2's start alone
    assert weights_digest(backbone.weights[:1]) != weights_digest(enc1[0].weights[:1])


# --------------------------------------------------------------------------- whole runs

@pytest.fixture(scope="module")
def cxr_runs(tmp_path_factory):
    """Two-fold tiny runs of the main job's task set: joint, and the baseline on the same encoder."""
    import os
    root = tmp_path_factory.mktemp("protocol")
    os.environ["UMS_REP_CACHE"] = str(root / "cache")
    common = ["--tasks", "cxr-hetero", "--preset", "tiny", "--folds", "2", "--no-progress"]
    assert main(["--strategy", "joint", "--out", str(root / "joint"), *common]) == 0
    assert main(["--strategy", "baseline", "--out", str(root / "baseline"), "--encoder",
                 str(root / "joint" / "encoder" / "model.keras"), *common]) == 0
    return root


def test_every_fold_starts_from_the_same_encoder(cxr_runs):
    r = json.loads((cxr_runs / "joint" / "results.json").read_text())
    folds = r["config"]["fold_records"]
    assert [f["val_fold"] for f in folds] == [0, 1] and r["config"]["folds"] == 2
    assert folds[0]["encoder_start_sha1"] == folds[1]["encoder_start_sha1"]
    assert folds[0]["encoder_end_sha1"] != folds[0]["encoder_start_sha1"]  # joint trains the encoder
    for f in folds:
        n = f["patients"]["abnormal"]
        assert n["train"] > 0 and n["val"] > 0 and n["test"] > 0
    total = sum(f["patients"]["abnormal"]["val"] for f in folds)
    assert total == folds[0]["patients"]["abnormal"]["train"] + folds[0]["patients"]["abnormal"]["val"]


def test_external_test_set_is_normalised_with_the_training_statistics(cxr_runs):
    """Montgomery is scored with the statistics of fold 0's Shenzhen training images, not its own."""
    from ums_rep.runs import load_model
    run = cxr_runs / "joint"
    r = json.loads((run / "results.json").read_text())
    train_root, test_root = (r["config"]["prepared"][k] for k in ("train", "test"))
    train = pd.read_csv(f"{train_root}/manifest.csv", dtype={"patient_id": str})
    test = pd.read_csv(f"{test_root}/manifest.csv", dtype={"patient_id": str})
    cv = cross_validation("cxr-hetero", train, test, 2, seed=0)
    fit_rows, _ = cv.fold(0)
    expected = MeanNormalizer.fit(read_image(f"{train_root}/{p}") for p in fit_rows.image)
    stored = MeanNormalizer.from_json((run / "normalizer.json").read_text())
    assert stored.mean == pytest.approx(expected.mean) and stored.std == pytest.approx(expected.std)
    own = MeanNormalizer.from_json(open(f"{test_root}/stats.json").read())
    assert abs(own.mean - stored.mean) > 1e-6  # the test set's own statistics differ
    table = pd.read_csv(run / "predictions_abnormal_fold0.csv")
    images = np.stack([read_image(f"{test_root}/{p}") for p in test.set_index("id").loc[table.id].image])
    probs = load_model(run / "model.keras").predict(stored(images)[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(probs["abnormal"][:, 1], table.p_tb, atol=1e-4)


def test_costs_count_the_source_model_on_both_sides(cxr_runs):
    joint = json.loads((cxr_runs / "joint" / "results.json").read_text())
    base = json.loads((cxr_runs / "baseline" / "results.json").read_text())
    encoder = json.loads((cxr_runs / "joint" / "encoder" / "results.json").read_text())
    src = joint["source"]
    assert src["role"] == "shared encoder" and base["source"]["role"] == "separate denoiser"
    assert encoder["total_train_seconds"] > 0
    assert src["train_seconds"] == pytest.approx(encoder["total_train_seconds"])
    assert src["trainable_params"] == encoder["total_params"]
    heads = joint["tasks"]["lung_seg"]["trainable_params"] + joint["tasks"]["abnormal"]["trainable_params"]
    assert joint["total_params"] == src["trainable_params"] + heads
    assert joint["total_train_seconds"] == pytest.approx(
        src["train_seconds"] + joint["tasks"]["lung_seg"]["train_seconds"] + joint["tasks"]["abnormal"]["train_seconds"])
    assert base["source"]["trainable_params"] == encoder["total_params"]
    assert base["source"]["train_seconds"] == pytest.approx(encoder["total_train_seconds"])
    assert base["total_params"] == base["source"]["trainable_params"] + sum(
        base["tasks"][t]["trainable_params"] for t in ("lung_seg", "abnormal"))
    # separate models: each its own encoder and head
    assert base["tasks"]["abnormal"]["trainable_params"] > joint["tasks"]["abnormal"]["trainable_params"]
    assert base["total_params"] > joint["total_params"]


@pytest.mark.parametrize("preset", ["tiny", "quick"])
def test_every_task_set_can_be_cross_validated_on_the_presets_phantoms(preset, tmp_path, monkeypatch):
    """The default --folds of each preset finds enough patients of every class in every task
    set's pool (cxr-homo's tiny Kermany phantoms once had a single viral patient)."""
    from ums_rep.runs import prepared_data
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    p = UMS_REP[preset]["finetune"]
    for set_name, sdef in TASK_SETS.items():
        if preset == "quick" and sdef["modality"] == "cxr" and set_name != "cxr-homo":
            continue  # Shenzhen/Montgomery at the quick size are covered by the main job's test
        data = {name: prepared_data(name, None, size=32, seed=0, phantom_n=p["n"][name], phantom_size=64)
                for name in {sdef["train"], sdef["test"]}}
        cv = cross_validation(set_name, data[sdef["train"]].manifest, data[sdef["test"]].manifest, p["folds"], 0)
        assert cv.n_runs == p["folds"] and not cv.test.empty


# --------------------------------------------------------------------------- the test split, read last

def test_precise_bn_statistics_are_those_of_the_folds_training_images(cxr_runs):
    """PreciseBN re-estimates batch norm on a sample of the fold's training images (at this size
    every one of them, in one chunk): fold 0's saved encoder holds their statistics at its first
    batch norm, not those of its validation fold or of the test set."""
    from ums_rep.runs import load_model
    run = cxr_runs / "joint"
    r = json.loads((run / "results.json").read_text())
    train_root, test_root = (r["config"]["prepared"][k] for k in ("train", "test"))
    train = pd.read_csv(f"{train_root}/manifest.csv", dtype={"patient_id": str})
    test = pd.read_csv(f"{test_root}/manifest.csv", dtype={"patient_id": str})
    fit_rows, val_rows = cross_validation("cxr-hetero", train, test, 2, seed=0).fold(0)
    assert len(fit_rows) <= 32  # one PreciseBN chunk: the layer holds the sample's own statistics
    norm = MeanNormalizer.from_json((run / "normalizer_fold0.json").read_text())
    model = load_model(run / "model.keras")
    conv, bn = model.get_layer("cdae.enc1.conv"), model.get_layer("cdae.enc1.bn")

    def moments(root, rows):
        x = norm(np.stack([read_image(f"{root}/{p}") for p in rows.image]))[..., None].astype("float32")
        y = np.asarray(conv(x), np.float64)
        return y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))

    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    want_mean, want_var = moments(train_root, fit_rows)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(var, want_var, rtol=1e-3, atol=1e-6)
    for root, rows in ((train_root, val_rows), (test_root, test)):
        other_mean, _ = moments(root, rows)
        assert np.abs(other_mean - mean).max() > 10 * np.abs(want_mean - mean).max() + 1e-4


def test_echo_encoder_pretrains_on_the_train_split_only(tmp_path, monkeypatch):
    """The echo encoder trains and validates on the 70% train split (fold 0 validates) and is
    scored on the test split after training: no patient of the fine-tuning pool (the 20% val
    split) or of the test split is in its training or validation rows."""
    from ums_rep import pretraining
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    calls = []
    real = pretraining.make_dataset

    def spy(prepared, rows, **kw):
        calls.append((rows.copy(), kw))
        return real(prepared, rows, **kw)

    monkeypatch.setattr(pretraining, "make_dataset", spy)
    out = tmp_path / "echo"
    assert pretraining.pretrain(pretraining.PretrainOptions(backbone="echo", preset="tiny", epochs=1, out=out,
                                                            no_progress=True)) == 0
    r = json.loads((out / "results.json").read_text())
    manifest = pd.read_csv(f"{r['config']['prepared']}/manifest.csv", dtype={"patient_id": str})
    (train_rows, train_kw), (val_rows, _), (scored, _) = calls
    assert train_kw.get("shuffle") and len(train_rows) == r["config"]["n_train"]
    assert len(val_rows) == r["config"]["n_val"] and len(scored) == r["config"]["n_test"]
    split = manifest.set_index("id").split
    assert set(split[train_rows.id]) == set(split[val_rows.id]) == {"train"}
    assert set(split[scored.id]) == {"test"}
    assert not set(train_rows.patient_id) & set(val_rows.patient_id)
    cv = cross_validation("echo-hetero", manifest, manifest, 1, seed=0)
    encoder_patients = set(train_rows.patient_id) | set(val_rows.patient_id)
    assert len(cv.pool) > 0 and len(cv.test) > 0
    assert not encoder_patients & (set(cv.pool.patient_id) | set(cv.test.patient_id))


def test_mt_unet_selects_its_best_epoch_on_the_validation_split(tmp_path, monkeypatch):
    """MT-UNet's plateau rule and best epoch watch the validation split: the history's validation
    losses at the best epoch are those of the saved (best) model on the val split, recomputed
    here, and not its losses on the test split."""
    from dataclasses import replace

    from data_prep.pipeline import load_prepared
    from mt_unet import data as mt_data
    from mt_unet.tasks import TASKS as MT_TASKS
    from mt_unet.train import main as mt_main
    from ums_rep.runs import load_model
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "mt"
    assert mt_main(["--preset", "tiny", "--seeds", "1", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text())
    (entry,) = r["tasks"].values()
    best = entry["per_seed"][0]["best_epoch"]
    h = pd.read_csv(out / "seed0" / "history.csv")
    watched = "val_weighted" if "val_weighted" in h else "val_total"
    assert h.loc[best - 1, watched] == h[watched].min()
    prepared = load_prepared(r["config"]["prepared"])
    prepared = replace(prepared, normalizer=MeanNormalizer.from_json((out / "normalizer.json").read_text()))
    model = load_model(out / "seed0" / "model.keras")

    def losses(split):
        totals, n = {t: 0.0 for t in MT_TASKS}, 0
        for x, y in mt_data.dataset(prepared, prepared.rows(split), 4, list(MT_TASKS)):
            pred = model(x, training=False)
            for t, task in MT_TASKS.items():
                totals[t] += float(tf.reduce_sum(task.loss(y[task.target], pred[t])))
            n += int(x.shape[0])
        return {t: v / n for t, v in totals.items()}

    val, test = losses("val"), losses("test")
    for t in MT_TASKS:
        assert h.loc[best - 1, f"val_{t}"] == pytest.approx(val[t], rel=1e-4), t
    assert not all(h.loc[best - 1, f"val_{t}"] == pytest.approx(test[t], rel=1e-2) for t in MT_TASKS)
