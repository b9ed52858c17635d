"""Talos scans: a small echo scan killed by SIGKILL and resumed, its CSV and best.json, and
``--params`` feeding the winner into pretrain and finetune."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from ums_rep.backbones import cdae
from ums_rep.models import build_shared
from ums_rep.pretraining import build, load_params
from ums_rep.presets import SCAN_SPACES as SPACES
from ums_rep.scan import main
from ums_rep.scanning import absolute_time_limit, best_params
from ums_rep.tasks import TASK_SETS

ROUNDS = 4


def _committed_rounds(out):
    """Rounds Talos has committed (its checkpoint.json), 0 before the first."""
    try:
        checkpoint = json.loads(next(out.glob("talos/*/checkpoint.json")).read_text())
        return checkpoint["metadata"]["experiment_round"] + 1
    except (StopIteration, OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def resumed_scan(tmp_path_factory):
    """A 4-round echo scan killed after 2 finished rounds, then resumed."""
    root = tmp_path_factory.mktemp("scan")
    env = {**os.environ, "UMS_REP_CACHE": str(root / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = root / "echo"
    cmd = [sys.executable, "-m", "ums_rep.scan", "--model", "echo", "--preset", "tiny", "--epochs", "3",
           "--round-limit", str(ROUNDS), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        committed = _committed_rounds(out)
        if committed >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the scan was not killed mid-way: {proc.stderr.read()[-2000:]}"
    # Talos commits a round by its checkpoint; round_data.jsonl and results.csv are appended just
    # before and after it, so a kill can land between them (CI once read 1 row after 2 jsonl lines)
    committed = _committed_rounds(out)
    first = pd.read_csv(next(out.glob("talos/*/results.csv"))).head(committed)
    os.environ["UMS_REP_CACHE"] = env["UMS_REP_CACHE"]
    assert main(["--resume", str(out), "--no-progress"]) == 0  # the scan's own arguments, from args.json
    return out, first


def test_resumed_scan_does_not_repeat_finished_rounds(resumed_scan):
    out, first = resumed_scan
    table = pd.read_csv(out / "scan.csv")
    assert 2 <= len(first) < ROUNDS and len(table) == ROUNDS
    keys = list(SPACES["echo"])
    assert not table.duplicated(subset=keys).any()  # every round a different combination
    # the rounds finished before the kill are kept as they were, not trained again
    kept = first.merge(table, on=keys + ["val_accuracy"])
    assert len(kept) == len(first)
    assert json.loads((out / "results.json").read_text())["config"]["resumed_from"]


def test_scan_writes_csv_best_params_and_analysis(resumed_scan):
    out, _ = resumed_scan
    table = pd.read_csv(out / "scan.csv")
    assert set(SPACES["echo"]) | {"val_accuracy", "val_loss"} <= set(table.columns)
    for key, values in SPACES["echo"].items():
        assert set(table[key]) <= set(values)
    best = json.loads((out / "best.json").read_text())
    top = table.loc[table.val_accuracy.idxmax()]
    assert best["_score"]["val_accuracy"] == pytest.approx(top.val_accuracy)
    assert {k: best[k] for k in SPACES["echo"]} == {k: (top[k].item() if hasattr(top[k], "item") else top[k])
                                                    for k in SPACES["echo"]}
    assert all((out / f"analyze_{k}.png").stat().st_size > 1000 for k in SPACES["echo"])


def test_best_json_changes_the_pretrained_model(resumed_scan, tmp_path):
    out, _ = resumed_scan
    best = load_params(out / "best.json")
    forced = {**best, "kernel_size": 7, "dilation": 3, "dropout": 0.1}
    (tmp_path / "forced.json").write_text(json.dumps(forced))
    model, task, used = build("echo", 32, load_params(tmp_path / "forced.json"))
    conv4 = model.get_layer("echo.conv4.conv")
    assert conv4.kernel_size == (7, 7) and conv4.dilation_rate == (3, 3)
    assert model.get_layer("echo.flow.dropout").rate == pytest.approx(0.1)
    assert task.optimizer == best["optimizer"]


def test_cdae_best_params_become_filters_and_rate():
    table = pd.DataFrame({"base_filters": [16, 32], "learning_rate": [1e-3, 3e-4], "batch_size": [8, 16],
                          "val_loss": [0.2, 0.1]})
    best = best_params(table, "cdae")
    assert best["filters"] == [32, 64, 128, 256] and best["learning_rate"] == 3e-4 and best["batch_size"] == 16
    model, task, _ = build("cdae", 32, best)
    assert model.get_layer("cdae.enc1.conv").filters == 32 and task.learning_rate == 3e-4


def test_head_params_change_the_finetune_heads():
    specs = TASK_SETS["cxr-hetero"]["tasks"]
    models, _ = build_shared(cdae((32, 32, 1)), "cxr", specs, {"head_units": 64, "head_dropout": 0.25})
    assert models["abnormal"].get_layer("abnormal.fc").units == 64
    assert models["abnormal"].get_layer("abnormal.dropout").rate == 0.25


def test_bad_limits_are_clear_errors(tmp_path, caplog):
    with pytest.raises(ValueError, match="HH:MM"):
        absolute_time_limit("90 minutes")
    assert main(["--model", "echo", "--preset", "tiny", "--fraction-limit", "2", "--out", str(tmp_path / "s")]) == 1
    assert "--fraction-limit must be in (0, 1]" in caplog.text
