"""``ums_rep.runs.start``: the one prologue of every training run (resume arguments, strategy,
seed, precision, checks, run folder, saved arguments), in the order its docstring gives, and
every training library starts its runs with it."""
import json

import keras
import numpy as np
import pytest

from mt_unet import experiment as mt_experiment
from ums_rep import experiment, pretraining, runs, scanning
from ums_rep.options import TrainingOptions

ORDER = ["resume_args", "distribution", "set_seed", "set_precision", "check", "run_dir", "save_args"]


def test_start_runs_the_prologue_in_its_one_right_order(monkeypatch, tmp_path):
    called = []
    for name in ORDER:
        if name != "check":
            original = getattr(runs, name)
            monkeypatch.setattr(runs, name, lambda *a, _n=name, _f=original, **k: called.append(_n) or _f(*a, **k))
    started = runs.start(TrainingOptions(out=tmp_path / "run", preset="tiny"), "test.start", "run",
                         check=lambda options: called.append("check") or "checked")
    assert called == ORDER
    assert started.out == tmp_path / "run" and started.checked == "checked" and not started.resume
    saved = json.loads((tmp_path / "run" / "args.json").read_text())
    assert saved["command"] == "test.start" and saved["out"] == str(tmp_path / "run")
    # resumed, save_args does not run: the run's args.json is the record it resumes from
    called.clear()
    runs.start(TrainingOptions(resume=tmp_path / "run"), "test.start", "run", check=lambda o: called.append("check"))
    assert called == ORDER[:-1]


def _draw() -> float:
    return float(keras.random.uniform(()).numpy()) + float(np.random.rand())


def test_a_resumed_run_starts_with_its_own_seed_precision_and_folder(tmp_path):
    folder = tmp_path / "run"
    first = runs.start(TrainingOptions(out=folder, seed=7, preset="tiny"), "test.start", "run")
    assert first.options.seed == 7 and first.policy == "float32"
    drawn = _draw()
    saved = (folder / "args.json").read_bytes()
    # interrupted (no results.json), then resumed with other values on the command line: the run's
    # own seed is set (resume_args before set_seed), its folder reused, its args.json kept
    seen = {}
    again = runs.start(TrainingOptions(resume=folder, seed=999, out=tmp_path / "elsewhere"), "test.start", "run",
                       check=lambda options: seen.setdefault("seed", options.seed))
    assert again.resume and again.options.seed == 7 and seen["seed"] == 7 and again.checked == 7
    assert again.out == folder and not (tmp_path / "elsewhere").exists()
    assert _draw() == drawn, "the resumed run draws what the interrupted one drew"
    assert (folder / "args.json").read_bytes() == saved


def test_a_refused_check_leaves_no_run_folder(tmp_path):
    def refuse(options):
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        runs.start(TrainingOptions(out=tmp_path / "run"), "test.start", "run", check=refuse)
    assert not (tmp_path / "run").exists()


class _Started(Exception):
    pass


@pytest.mark.parametrize("module, function, options, command", [
    (pretraining, "pretrain", pretraining.PretrainOptions, "ums_rep.pretrain"),
    (experiment, "run", experiment.FinetuneOptions, "ums_rep.finetune"),
    (scanning, "scan", scanning.ScanOptions, "ums_rep.scan"),
    (mt_experiment, "run", mt_experiment.MtUnetOptions, "mt_unet.train"),
])
def test_every_training_library_starts_its_runs_with_start(monkeypatch, tmp_path, module, function, options,
                                                           command):
    def fake_start(opts, cmd, name, check=None):
        raise _Started(cmd, name(opts) if callable(name) else name)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(module, "start", fake_start)
    with pytest.raises(_Started) as started:
        getattr(module, function)(options(preset="tiny"))
    assert started.value.args[0] == command
    assert list(tmp_path.iterdir()) == [], "nothing written before start"
