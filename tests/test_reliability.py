"""Reliability: SIGKILL mid-run and --resume gives the uninterrupted result; a non-finite loss
stops cleanly; the bad-input cases not covered next to their loaders (see the matrix in docs/reliability.md)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_prep import egd, rsna
from data_prep._layout import DatasetLayoutError
from data_prep.io import atomic_write_text
from data_prep.splits import split_patients
from ums_rep.hooks import EpochCallback
from ums_rep.strategies import ALL_TASKS, FitConfig, default_hooks, fit
from ums_rep.tasks import Task


def _run(args, env):
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True)


def _kill_after(args, env, marker, timeout=300):
    """Start ``python -m args``, SIGKILL it as soon as ``marker`` exists; return its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if marker.exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-run: {proc.stderr.read()[-2000:]}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "UMS_REP_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_mt_unet_killed_and_resumed_ends_like_an_uninterrupted_run(env, tmp_path):
    common = ["mt_unet.train", "--preset", "tiny", "--scheme", "mtl1", "--epochs", "6", "--deterministic",
              "--no-progress"]
    whole = _run(common + ["--out", str(tmp_path / "whole")], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    cut = tmp_path / "cut"
    _kill_after(common + ["--out", str(cut)], env, cut / "seed0" / "checkpoints" / "ckpt-2.index")
    assert not (cut / "results.json").exists()
    state = json.loads((cut / "seed0" / "checkpoints" / "state.json").read_text())
    # the kill can land after checkpoint 2 is written but before state.json records it: the run
    # must then resume from epoch 1, ignoring the unrecorded checkpoint
    assert 1 <= state["epoch"] < 6
    resumed = _run(["mt_unet.train", "--resume", str(cut), "--no-progress"], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {state['epoch']}" in resumed.stderr
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((cut / "results.json").read_text())
    (ea,), (eb,) = a["tasks"].values(), b["tasks"].values()
    assert ea["metrics"] == eb["metrics"]  # bit-identical under op determinism
    ha = pd.read_csv(tmp_path / "whole" / "seed0" / "history.csv")
    hb = pd.read_csv(cut / "seed0" / "history.csv")
    cols = ["val_total", "train_saliency", "train_disease", "sigma_saliency", "sigma_disease", "lr"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols])


def test_pretrain_killed_and_resumed_draws_the_same_noise(env, tmp_path):
    common = ["ums_rep.pretrain", "--backbone", "cdae", "--preset", "tiny", "--epochs", "4", "--deterministic"]
    whole = _run(common + ["--out", str(tmp_path / "whole")], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    cut = tmp_path / "cut"
    _kill_after(common + ["--out", str(cut)], env, cut / "checkpoints" / "ckpt-1.index")
    resumed = _run(["ums_rep.pretrain", "--resume", str(cut)], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ha = pd.read_csv(tmp_path / "whole" / "history.csv")
    hb = pd.read_csv(cut / "history.csv")
    pd.testing.assert_frame_equal(ha[["train_denoise", "val_denoise"]], hb[["train_denoise", "val_denoise"]])


def test_resume_needs_a_run_folder(tmp_path, caplog):
    from mt_unet.train import main
    assert main(["--resume", str(tmp_path)]) == 1
    assert "args.json" in caplog.text and str(tmp_path) in caplog.text


def test_non_finite_loss_stops_restores_and_returns_the_history():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    x = np.ones((8, 4), "float32")
    good = tf.data.Dataset.from_tensor_slices((x, {"clean": np.ones((8, 1), "float32")}))
    bad = tf.data.Dataset.from_tensor_slices((x, {"clean": np.full((8, 1), np.nan, "float32")}))
    task = Task("denoise", "reconstruction")
    # epoch 1 trains on finite data; epoch 2 meets NaN targets
    train = good.batch(4).take(2).concatenate(bad.batch(4).repeat())
    weights_after_epoch_1 = {}

    def remember(epoch, record):
        weights_after_epoch_1.update(enumerate(w.copy() for w in model.get_weights()))

    config = FitConfig(epochs=3, steps_per_epoch={"denoise": 2}, progress=False, on_nonfinite="stop")
    out = fit("joint", {"denoise": model}, {"denoise": task}, {"denoise": train}, {"denoise": good.batch(4)},
              config, hooks=[*default_hooks(config), EpochCallback(remember)])
    stopped = out["stopped"][ALL_TASKS]
    assert stopped.startswith("non-finite denoise loss") and "restored" in stopped
    assert len(out["history"]) == 1
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_array_equal(w, weights_after_epoch_1[i])


# --------------------------------------------------------------------------- bad-input matrix

def test_missing_and_malformed_csv_name_the_file(phantom_root, tmp_path):
    src = tmp_path / "rsna"
    shutil.copytree(phantom_root / "rsna", src)
    labels = src / "stage_2_train_labels.csv"
    labels.unlink()
    with pytest.raises(DatasetLayoutError, match="stage_2_train_labels.csv: RSNA labels CSV not found"):
        rsna.load(src)
    labels.write_text('patientId,x,y\n"a,1,2\n')
    with pytest.raises(DatasetLayoutError, match="stage_2_train_labels.csv.*(malformed|lacks column)"):
        rsna.load(src)
    labels.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetLayoutError, match="stage_2_train_labels.csv"):
        rsna.load(src)


def test_a_patient_in_two_folders_stays_in_one_split():
    # Kermany-style: one patient with images under two class folders (bacteria and virus)
    rows = [{"patient_id": f"p{i}", "label": "a" if i % 2 else "b"} for i in range(40)]
    rows += [{"patient_id": "p3", "label": "b"}, {"patient_id": "p8", "label": "a"}]
    df = pd.DataFrame(rows)
    split = split_patients(df, "70/20/10", seed=0)
    assert df.assign(split=split).groupby("patient_id").split.nunique().max() == 1


def test_fixations_outside_the_image_are_dropped():
    gaze = pd.DataFrame({"x": [10.0, 500.0, -3.0, 20.0], "y": [10.0, 5.0, 4.0, 900.0], "weight": 1.0})
    m = egd.saliency_map(gaze, (64, 48))
    only_inside = egd.saliency_map(gaze.iloc[:1], (64, 48))
    np.testing.assert_allclose(m, only_inside)
    assert m.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no gaze point inside the 64×48 image"):
        egd.saliency_map(gaze.iloc[1:], (64, 48))


def test_a_training_split_with_a_missing_class_fails_before_training(tmp_path):
    from mt_unet.data import check_split

    class P:
        root = tmp_path

    rows = {"train": pd.DataFrame({"label": ["Normal", "CHF"]}), "val": pd.DataFrame({"label": ["CHF"]}),
            "test": pd.DataFrame({"label": ["pneumonia"]})}
    with pytest.raises(ValueError, match=r"manifest.csv: the training split has no \['pneumonia'\]"):
        check_split(P, rows, ("saliency", "disease"))
    check_split(P, rows, ("saliency",))  # saliency alone needs no class balance
    with pytest.raises(ValueError, match="the val split is empty"):
        check_split(P, {**rows, "val": rows["val"].iloc[:0]}, ("saliency",))


def test_a_crash_while_writing_results_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_text(target, '{"ok": 1}')

    def crash(*a, **k):
        raise KeyboardInterrupt("killed while renaming")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"ok": 2}')
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind
