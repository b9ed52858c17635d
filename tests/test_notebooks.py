"""Every notebook runs top to bottom at the tiny preset (CI executes them here, with nbclient), and
what it computed is checked: the run folders it wrote (results.json, tables, figures) and that
the tables it shows are those runs' numbers. Notebooks are stored without outputs; their logic
lives in the package."""
import ast
import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tests.helpers import table_rows

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs_and_take_a_preset():
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "PRESET =" in params[0].source, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} stored with outputs"


class Shown:
    """What an executed notebook showed: its printed and displayed text (Markdown, plain text)
    in order, and how many images it displayed."""

    def __init__(self, nb):
        texts, self.images, self.results = [], 0, []
        for cell in nb.cells:
            for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
                if o.output_type == "stream" and o.name == "stdout":
                    texts.append(o.text)
                elif o.output_type in ("execute_result", "display_data"):
                    self.images += "image/png" in o.data
                    texts.append(o.data.get("text/markdown") or o.data.get("text/plain", ""))
                    if o.output_type == "execute_result":
                        self.results.append(o.data.get("text/plain", ""))
        self.text = "\n".join(texts)
        self.rows = table_rows(self.text)


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _check_phantoms_tour(out: Path, shown: Shown):
    from data_prep import datasets
    from data_prep.phantoms.layouts import LAYOUTS
    for layout in LAYOUTS:  # every layout written, read back by its loader, and its line printed
        m = datasets.load(layout, out / layout)
        assert len(m) == 30, layout  # the tiny preset's count
        assert re.search(rf"^{layout}\s+30 images,\s+{m.patient_id.nunique()} patients", shown.text, re.M), layout
    assert (out / "contact_sheet.png").stat().st_size > 1000 and shown.images >= 1
    prepared = out / "prepared-shenzhen"
    manifest = pd.read_csv(prepared / "manifest.csv")
    assert len(manifest) == 30 and all((prepared / p).is_file() for p in manifest["image"])
    per_split = manifest.groupby("split").patient_id.nunique()
    assert per_split.to_dict() == {"train": 21, "val": 6, "test": 3}  # 70/20/10 of Shenzhen's 30 patients
    for split, n in per_split.items():  # the Series the last cell shows
        assert re.search(rf"^{split}\s+{n}$", shown.results[-1], re.M), shown.results[-1]


def _check_cdae_denoising(out: Path, shown: Shown):
    from data_prep.noise import NOISE_LEVELS
    r = _results(out / "cdae")
    assert r["command"].startswith("pretrain --backbone cdae") and r["config"]["preset"] == "tiny"
    header = next(row for row in shown.rows if row[0] == "noise")
    shown_rows = {row[0]: row for row in shown.rows if len(row) == len(header)}
    for level in NOISE_LEVELS:  # Table 2 as shown is the run's table2
        for key, column in (("noisy", "noisy"), ("cdae", "CDAE"), ("nlm", "NLM"), ("wavelet", "wavelet")):
            q = r["table2"][level][key]
            cell = shown_rows[level][header.index(column)]
            assert cell == f"{q['psnr']:.2f} / {q['ssim']:.2f} / {q['ms_ssim']:.2f}", (level, column, cell)
    history = pd.read_csv(out / "cdae" / "history.csv")
    assert history.epoch.tolist() == list(range(1, r["config"]["epochs"] + 1))
    assert (out / "cdae" / "denoising.png").stat().st_size > 1000 and shown.images >= 1


def _check_finetune_runs(out: Path, shown: Shown, set_name: str, tasks: set):
    """The three runs' results.json, one shared encoder, and the strategy table's accuracy cells."""
    header = next(row for row in shown.rows if row[:2] == ["strategy", "task"] and "accuracy" in row)
    cells = {(row[0], row[1]): row[header.index("accuracy")] for row in shown.rows if len(row) == len(header)}
    cwd = out.parents[2]  # the kernel's folder: run paths in results.json are relative to it
    encoder = (out / f"{set_name}-independent" / "encoder" / "model.keras").resolve()
    assert encoder.is_file()
    for strategy in ("independent", "joint", "baseline"):
        r = _results(out / f"{set_name}-{strategy}")
        assert r["command"].startswith(f"finetune --strategy {strategy} --tasks {set_name}"), r["command"]
        assert (r["config"]["strategy"], r["config"]["tasks"], r["config"]["preset"]) == (strategy, set_name, "tiny")
        assert set(r["tasks"]) == tasks
        if "source" in r:  # every run on the first run's encoder (the notebook passes --encoder)
            assert (cwd / r["source"]["path"]).resolve() == encoder, r["source"]
        for task in tasks:
            assert cells[(strategy, task)] == f"{r['tasks'][task]['metrics']['accuracy']:.3f}", (strategy, task)


def _check_cxr_tasks(out: Path, shown: Shown):
    _check_finetune_runs(out, shown, "cxr-hetero", {"lung_seg", "abnormal"})
    assert "McNemar" in shown.text
    figures = list(out.glob("cxr-hetero-*/gradcam_*.png"))
    assert figures and shown.images >= 1


def _check_echo_tasks(out: Path, shown: Shown):
    _check_finetune_runs(out, shown, "echo-hetero", {"envelope_seg", "flow", "quality"})
    run = out / "echo-hetero-independent"
    rec = pd.read_csv(run / "recommendation.csv")
    # one row per flow test image; recommended = predicted TR and P(good quality) >= 0.5
    assert sorted(rec.id) == sorted(pd.read_csv(run / "predictions_flow.csv").id) and len(rec) > 0
    assert rec.recommended.tolist() == ((rec.flow_pred == "TR") & (rec.p_good >= 0.5)).tolist()
    assert f"{int(rec.recommended.sum())} of {len(rec)} test images recommended" in shown.text


def _check_mt_unet(out: Path, shown: Shown):
    runs = {"mtunet-full-mtl1": ["saliency", "disease"], "mtunet-full-mtl3": ["disease"],
            "unets-full-mtl3": None, "simplenet-full-mtl3": None}  # the tiny preset's four, σ each learns
    kld_cells = {}
    for header in (row for row in shown.rows if row[0] == "model"):  # train.compare's and the report's table
        col = next(i for i, c in enumerate(header) if c.startswith("KLD"))
        for row in shown.rows:
            if len(row) == len(header) and row[0] not in ("model", "*paper*"):
                kld_cells.setdefault(row[0], set()).add(row[col].strip("*"))
    for name, learned in runs.items():
        model, variant, scheme = name.split("-")
        r = _results(out / name)
        assert r["command"].startswith(f"mt_unet.train --model {model} --variant {variant} --scheme {scheme}")
        assert {k: r["config"][k] for k in ("model", "variant", "scheme", "preset")} == \
            {"model": model, "variant": variant, "scheme": scheme, "preset": "tiny"}
        (label, t), = r["tasks"].items()
        assert learned == t["per_seed"][0]["final_sigma"].get("learned"), (name, t["per_seed"][0]["final_sigma"])
        assert kld_cells[label] == {f"{t['metrics']['kld']:.3f} ± {t['std']['kld']:.3f}"}, (label, kld_cells[label])
    for name in ("mtunet-full-mtl1", "mtunet-full-mtl3"):
        assert (out / name / "seed0" / "training_curves.png").stat().st_size > 1000
    assert (out / "mtunet-full-mtl3" / "seed0" / "saliency_overlays.png").stat().st_size > 1000
    assert shown.images >= 3


def _check_talos_scan(out: Path, shown: Shown):
    from ums_rep.presets import SCAN_SPACES
    from ums_rep.runs import load_model
    table = pd.read_csv(out / "scan" / "scan.csv")
    assert len(table) == 2  # --round-limit 2
    best = json.loads((out / "scan" / "best.json").read_text())
    top = table.loc[table.val_accuracy.astype(float).idxmax()]  # ties: the earlier round
    keys = list(SCAN_SPACES["echo"])
    assert {k: best[k] for k in keys} == {k: type(best[k])(top[k]) for k in keys}
    assert f"best here: { {k: best[k] for k in keys} }" in shown.text
    # the winner fed pretraining: its config, its model's layers, and the dict the notebook shows
    r = _results(out / "echo-best")
    params = r["config"]["params"]
    assert {k: params[k] for k in ("kernel_size", "dilation", "dropout", "optimizer")} == \
        {k: best[k] for k in ("kernel_size", "dilation", "dropout", "optimizer")}
    assert r["config"]["batch_size"] == best["batch_size"]
    assert ast.literal_eval(shown.results[-1]) == params
    conv = load_model(out / "echo-best" / "model.keras").get_layer("echo.conv4.conv")
    assert conv.kernel_size == (best["kernel_size"],) * 2 and conv.dilation_rate == (best["dilation"],) * 2
    assert len(list((out / "scan").glob("analyze_*.png"))) == len(keys) == shown.images


CHECKS = {"01_phantoms_tour": _check_phantoms_tour, "02_cdae_denoising": _check_cdae_denoising,
          "03_cxr_tasks": _check_cxr_tasks, "04_echo_tasks": _check_echo_tasks, "05_mt_unet": _check_mt_unet,
          "06_talos_scan": _check_talos_scan}


def test_every_notebook_has_its_check():
    assert sorted(CHECKS) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_the_tiny_preset(path, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "notebook-cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # the kernel runs in a temporary folder: let it import the package even when not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = 'PRESET = "tiny"\nDATA = None'
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = tmp_path / "runs" / "notebooks" / f"{path.stem}-tiny"
    assert out.is_dir()
    CHECKS[path.stem](out, Shown(nb))
