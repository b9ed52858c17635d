"""Issue 17's newcomer journeys, one test per failure: --resume and --out never take over or
overwrite another command's run (2); report and every --compare accept any mix of run folders,
and a head scan works for every task (3); model-file and image errors are one line (5); runs
started together on one empty cache all succeed (7)."""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import keras
import pytest

from data_prep import datasets
from data_prep.io import ImageReadError, read_image
from tests.helpers import table_rows
from ums_rep import runs
from ums_rep.presets import UMS_REP


# --------------------------------------------------------------------------- 2: run folders

def _start(folder, command, **kw):
    """A run folder as ``command`` leaves it when started: created, args.json written."""
    args = runs.resume_args(argparse.Namespace(resume=None, out=folder, **kw), command)
    runs.save_args(args, runs.run_dir(folder, "x", command))
    return folder


def test_resume_and_out_refuse_another_commands_or_a_finished_run(tmp_path):
    mt = _start(tmp_path / "mt", "mt_unet.train", scheme="mtl1")
    ft = _start(tmp_path / "ft", "ums_rep.finetune", strategy="joint")
    assert json.loads((mt / "args.json").read_text())["command"] == "mt_unet.train"
    before = (mt / "args.json").read_bytes()
    with pytest.raises(runs.RunFolderError, match=f"^{mt}: .*mt_unet.train") as e:
        runs.resume_args(argparse.Namespace(resume=mt), "ums_rep.finetune")
    assert "\n" not in str(e.value)
    with pytest.raises(runs.RunFolderError, match="ums_rep.finetune"):
        runs.resume_args(argparse.Namespace(resume=ft), "mt_unet.train")
    with pytest.raises(runs.RunFolderError, match="mt_unet.train"):  # --out into another command's folder
        runs.run_dir(mt, "x", "ums_rep.pretrain")
    with pytest.raises(runs.RunFolderError, match="--resume"):  # the same command, not resuming
        runs.run_dir(mt, "x", "mt_unet.train")
    assert (mt / "args.json").read_bytes() == before
    # the interrupted run itself resumes with its own arguments
    args = runs.resume_args(argparse.Namespace(resume=mt, no_progress=True), "mt_unet.train")
    assert args.scheme == "mtl1" and args.out == mt and runs.run_dir(mt, "x", "mt_unet.train", resume=True) == mt
    # a finished run (results.json) is neither resumed nor written into
    (mt / "results.json").write_text(json.dumps({"command": "mt_unet.train --model mtunet"}))
    with pytest.raises(runs.RunFolderError, match="finished"):
        runs.resume_args(argparse.Namespace(resume=mt), "mt_unet.train")
    evaluated = tmp_path / "eval"
    evaluated.mkdir()
    (evaluated / "results.json").write_text(json.dumps({"command": "mt_unet.evaluate", "metrics": {}}))
    with pytest.raises(runs.RunFolderError, match="finished run of mt_unet.evaluate"):
        runs.run_dir(evaluated, "x", "ums_rep.finetune")
    # finetune pretrains its encoder into <run>/encoder: that nested folder is pretrain's
    enc = _start(ft / "encoder", "ums_rep.pretrain", backbone="cdae")
    assert runs.resume_args(argparse.Namespace(resume=enc), "ums_rep.pretrain").backbone == "cdae"


def test_cli_resume_of_another_commands_run_is_one_line(tmp_path, caplog):
    from ums_rep.pretrain import main
    mt = _start(tmp_path / "mt", "mt_unet.train", scheme="mtl1")
    assert main(["--resume", str(mt), "--preset", "tiny", "--epochs", "1"]) == 1
    assert f"{mt}: a run folder of mt_unet.train" in caplog.text
    assert sorted(p.name for p in mt.iterdir()) == ["args.json"]


# --------------------------------------------------------------------------- 3: report, compare, scan

def _results(folder, body):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(body))
    return folder


def _finetune(folder, preset):
    task = {"metrics": {"accuracy": 0.7}, "train_seconds": 1.0, "trainable_params": 10}
    folder.mkdir(parents=True)
    (folder / "predictions_viral_vs_normal.csv").write_text("id,correct\na,True\nb,False\n")
    return _results(folder, {"command": "finetune --strategy joint --tasks cxr-homo", "seed": 0,
                             "config": {"strategy": "joint", "tasks": "cxr-homo", "preset": preset, "data": "phantom"},
                             "tasks": {"viral_vs_normal": task}, "total_train_seconds": 1.0, "total_params": 10})


def _mt_unet(folder, preset):
    entry = {"label": "UNetC", "metrics": {"accuracy": 0.5}, "std": {}, "train_seconds": 2.0, "trainable_params": 5}
    return _results(folder, {"command": "mt_unet.train --model unetc", "seed": 0, "tasks": {"UNetC": entry},
                             "config": {"model": "unetc", "preset": preset, "seeds": 1, "shape": [64, 48],
                                        "data": "phantom"}})


def test_report_and_compares_skip_what_they_do_not_use_and_refuse_mixed_presets(tmp_path, caplog):
    from mt_unet.train import compare as mt_compare
    from ums_rep.finetune import compare as ft_compare, main as ft_main
    from ums_rep.reporting import build
    ft, mt = _finetune(tmp_path / "ft", "tiny"), _mt_unet(tmp_path / "mt", "tiny")
    ev = _results(tmp_path / "ev", {"command": "mt_unet.evaluate", "model": "m.keras", "split": "test",
                                    "metrics": {"accuracy": 0.5}})
    cut = tmp_path / "cut"  # an interrupted run: args.json, no results.json
    cut.mkdir()
    (cut / "args.json").write_text("{}")
    everything = [ft, mt, ev, cut]
    md = build(everything, tmp_path / "report")
    rows = table_rows(md)
    assert ["joint", "viral_vs_normal"] in [r[:2] for r in rows] and "UNetC" in [r[0] for r in rows]
    assert f"skipped {ev}: a mt_unet.evaluate run" in caplog.text and f"skipped {cut}: no results.json" in caplog.text
    caplog.clear()
    assert ["joint", "viral_vs_normal"] in [r[:2] for r in table_rows(ft_compare(everything))]
    assert all(f"skipped {d}" in caplog.text for d in (mt, ev, cut))
    assert "UNetC" in [r[0] for r in table_rows(mt_compare(everything))]
    quick = _finetune(tmp_path / "ft-quick", "quick")
    for fn in (ft_compare, lambda d: build(d, tmp_path / "r2")):
        with pytest.raises(ValueError, match="different presets.*--mix-presets"):
            fn([ft, quick])
    assert ft_main(["--compare", str(ft), str(quick)]) == 1
    assert ft_main(["--compare", str(ft), str(quick), str(ev), "--mix-presets"]) == 0
    with pytest.raises(ValueError, match="no mt_unet.train run"):
        mt_compare([ft, ev])


def _scan_row_ids(features, prepared, tables) -> list:
    """The manifest ``id`` of each row of a head scan's features, found by pixels: the stand-in
    encoder flattens the image, normalised with the training dataset's ``prepared`` statistics;
    ``tables`` are (prepared folder, manifest) pairs whose images it may be."""
    import numpy as np
    from data_prep.io import read_image
    by_pixels = {}
    for folder, manifest in tables:
        for image_id, image in zip(manifest.id, manifest.image):
            key = np.round(read_image(folder / image) * 255).astype(np.uint8).tobytes()
            assert key not in by_pixels, f"{image_id}: two images with the same pixels"
            by_pixels[key] = image_id
    norm = prepared.normalizer
    pixels = np.round((np.asarray(features) * norm.std + norm.mean) * 255).astype(np.uint8)
    return [by_pixels[row.tobytes()] for row in pixels]


def test_head_scan_has_data_for_every_task(tmp_path, monkeypatch):
    from data_prep.pipeline import load_prepared
    from ums_rep import scanning
    from ums_rep.tasks import CLASSIFICATION_TASKS, TASK_SETS
    for preset in UMS_REP:  # every classification task's datasets, every preset
        counts = scanning.phantom_counts(preset)
        for set_name, _ in CLASSIFICATION_TASKS.values():
            sdef = TASK_SETS[set_name]
            assert {sdef["train"], sdef["test"]} <= set(counts), (preset, set_name)
    # a head scan's data, on tiny phantoms with a stand-in encoder (Flatten: the rows are found by
    # their pixels), for a task tested on another dataset and one tested on its own dataset's test
    # split: training and validation rows come from the task's pool, patient-disjoint, no test image
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scanning, "frozen_encoder", lambda args, modality: keras.Sequential([keras.layers.Flatten()]))
    preset = {**UMS_REP["tiny"]["scan"], "n": scanning.phantom_counts("tiny")}
    for task in ("abnormal", "bacterial_vs_viral"):
        args = scanning.ScanOptions(model="head", task=task, no_progress=True, preset="tiny")
        xt, yt, xv, yv, info = scanning.scan_data("head", args, preset)
        assert len(xt) == len(yt) > 0 and len(xv) == len(yv) > 0 and yt.shape[1] == 2
        assert all(str(tmp_path / "cache" / "prepared") in p for p in info["prepared"])
        set_name, spec = CLASSIFICATION_TASKS[task]
        sdef = TASK_SETS[set_name]
        loaded = [load_prepared(p) for p in info["prepared"]]
        train_p = next(p for p in loaded if (p.manifest.dataset == sdef["train"]).all())
        test_p = next(p for p in loaded if (p.manifest.dataset == sdef["test"]).all())
        test = test_p.manifest if sdef["test_split"] is None else \
            test_p.manifest[test_p.manifest.split == sdef["test_split"]]
        assert len(test) > 0
        tables = [(p.root, p.manifest) for p in {id(p): p for p in (train_p, test_p)}.values()]
        train_ids, val_ids = (_scan_row_ids(f, train_p, tables) for f in (xt, xv))
        assert len(set(train_ids)) == len(train_ids) and len(set(val_ids)) == len(val_ids)
        patient = dict(zip(train_p.manifest.id, train_p.manifest.patient_id))
        assert set(train_ids) | set(val_ids) <= set(patient), task  # all from the training dataset
        train_patients, val_patients = {patient[i] for i in train_ids}, {patient[i] for i in val_ids}
        assert not train_patients & val_patients, (task, sorted(train_patients & val_patients))
        in_test = set(test.id) & (set(train_ids) | set(val_ids))
        assert not in_test, (task, sorted(in_test)[:3])
        if task == "bacterial_vs_viral":  # patients with several images: disjointness is not by construction
            counts = train_p.manifest[train_p.manifest.id.isin(train_ids + val_ids)].groupby("patient_id").size()
            assert counts.max() >= 2


# --------------------------------------------------------------------------- 5: model files, --out, images

def test_model_file_errors_are_one_line_naming_the_file(tmp_path):
    inp = keras.Input((8, 8, 1))
    multi = keras.Model(inp, {"a": keras.layers.Conv2D(1, 1, name="a")(inp), "b": keras.layers.Conv2D(1, 1, name="b")(inp)})
    runs.save_model(multi, tmp_path / "finetuned.keras")
    runs.save_model(keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp)), tmp_path / "evil.keras")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "fake.keras").write_text("not a model")
    data = (tmp_path / "finetuned.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    import zipfile
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("readme.txt", "no config")
    cases = {"table.csv": "not a .keras model file", "fake.keras": "not a valid .keras file",
             "cut.keras": "not a valid .keras file", "empty.keras": "cannot load the model",
             "evil.keras": "holds a Lambda layer .* safe_mode", "missing.keras": "no such model file"}
    for name, problem in cases.items():
        with pytest.raises(runs.ModelFileError, match=f"^{tmp_path / name}: {problem}") as e:
            runs.load_model(tmp_path / name)
        assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    assert len(runs.load_model(tmp_path / "finetuned.keras").outputs) == 2
    with pytest.raises(runs.ModelFileError, match=r"finetuned.keras: a model with 1 input\(s\) and 2 output\(s\).*not an encoder"):
        runs.load_model(tmp_path / "finetuned.keras", expect="encoder")


def test_commands_report_bad_models_and_unwritable_out_in_one_line(tmp_path, caplog):
    from mt_unet.evaluate import main as evaluate_main
    (tmp_path / "model.txt").write_text("x")
    assert evaluate_main([str(tmp_path / "model.txt")]) == 1
    assert f"{tmp_path / 'model.txt'}: not a .keras model file" in caplog.text
    (tmp_path / "afile").write_text("x")
    with pytest.raises(runs.RunFolderError, match=f"^{tmp_path / 'afile' / 'run'}: cannot create the run folder"):
        runs.run_dir(tmp_path / "afile" / "run", "x", "ums_rep.finetune")
    from ums_rep.pretrain import main as pretrain_main
    caplog.clear()
    assert pretrain_main(["--preset", "tiny", "--out", str(tmp_path / "afile" / "run")]) == 1
    assert "cannot create the run folder" in caplog.text and "Traceback" not in caplog.text


def test_random_bytes_named_png_are_not_a_png(tmp_path):
    (tmp_path / "noise.png").write_bytes(os.urandom(2048))
    with pytest.raises(ImageReadError, match="noise.png: not a valid PNG image"):
        read_image(tmp_path / "noise.png")
    (tmp_path / "noise.jpg").write_bytes(os.urandom(2048))
    with pytest.raises(ImageReadError, match="noise.jpg: not a valid JPEG image"):
        read_image(tmp_path / "noise.jpg")


# --------------------------------------------------------------------------- 7: a shared cache

PHANTOM_CHILD = """
import os, sys, time
from data_prep import datasets
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
print(datasets.phantom("shenzhen", n=int(sys.argv[2]), seed=0, size=64))
"""


def test_concurrent_commands_share_one_phantom_cache(tmp_path):
    env = {**os.environ, "UMS_REP_CACHE": str(tmp_path / "cache")}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PHANTOM_CHILD, str(go), "24"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    time.sleep(1.0)  # every child imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1500:] for _, err in outs]
    from data_prep.phantoms.layouts import GENERATOR_VERSION
    folder = tmp_path / "cache" / "phantoms" / f"shenzhen-v{GENERATOR_VERSION}-n24-s0-px64"
    assert {o.strip() for o, _ in outs} == {str(folder)}
    assert len(datasets.load("shenzhen", folder)) == 24
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_callers_prepare_a_cache_entry_once(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    datasets.phantom("shenzhen", n=40, seed=0, size=64)
    calls, real = [], runs.prepare

    def counted(*a, **k):
        calls.append(a)
        time.sleep(0.3)  # a slow preparation: the others must wait, not read it half-written
        return real(*a, **k)

    monkeypatch.setattr(runs, "prepare", counted)
    barrier, got, errors = threading.Barrier(3), [], []

    def call():
        barrier.wait()
        try:
            got.append(runs.prepared_data("shenzhen", None, size=32, phantom_n=40, phantom_size=64, progress=False))
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(calls) == 1
    assert len({p.info["prepared"] for p in got}) == 1
    assert all(len(p.manifest) == 40 and p.info["dataset"] == "shenzhen" for p in got)
