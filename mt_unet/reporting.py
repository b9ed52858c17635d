"""MT-UNet's part of the report (Tables 1–3 beside the paper's numbers) and the comparison of
``mt_unet.train`` runs (``--compare``), registered with :mod:`ums_rep.reporting`: the kinds of
results.json it reads (``mt_unet.train``; ``mt_unet.evaluate`` outputs are recognised and
skipped) and its section. :data:`PAPER` is the one home of the paper's numbers.
"""
from __future__ import annotations

import math

from mt_unet.tasks import CLASSES
from ums_rep import reporting
from ums_rep.reporting import collect, compare_md, markdown_table, table_anchor

METRICS = ("kld", "cc", "hs", "accuracy", "auc", *(f"auc_{c}" for c in CLASSES))  # Tables 1-3
LOWER_IS_BETTER = {"kld"}
ANCHOR = "mt-unet-tables-1-3"

# MT-UNet Tables 1-3 (Appendix C): median ± std over ≥ 5 trainings
PAPER = {
    "MT-UNet (MTL3)": {"kld": 0.726, "cc": 0.569, "hs": 0.548, "accuracy": 0.670, "auc": 0.843,
                       "auc_Normal": 0.864, "auc_CHF": 0.912, "auc_pneumonia": 0.711},
    "MT-UNet (MTL1)": {"kld": 0.730, "cc": 0.566, "hs": 0.547, "accuracy": 0.649, "auc": 0.832,
                       "auc_Normal": 0.859, "auc_CHF": 0.906, "auc_pneumonia": 0.682},
    "MT-UNet (MTL2)": {"kld": 0.738, "cc": 0.563, "hs": 0.545, "accuracy": 0.638, "auc": 0.832,
                       "auc_Normal": 0.861, "auc_CHF": 0.913, "auc_pneumonia": 0.672},
    "MT-UNetB (MTL3)": {"kld": 0.730, "cc": 0.568, "hs": 0.548, "accuracy": 0.653, "auc": 0.836,
                        "auc_Normal": 0.859, "auc_CHF": 0.907, "auc_pneumonia": 0.694},
    "MT-UNetT (MTL3)": {"kld": 0.734, "cc": 0.561, "hs": 0.544, "accuracy": 0.649, "auc": 0.847,
                        "auc_Normal": 0.883, "auc_CHF": 0.910, "auc_pneumonia": 0.695},
    "UNetC": {"accuracy": 0.593, "auc": 0.780, "auc_Normal": 0.841, "auc_CHF": 0.840, "auc_pneumonia": 0.597},
    "EfficientNetV2-S": {"accuracy": 0.640, "auc": 0.826, "auc_Normal": 0.852, "auc_CHF": 0.901,
                         "auc_pneumonia": 0.653},
    "InceptionResNetV2": {"accuracy": 0.640, "auc": 0.824, "auc_Normal": 0.862, "auc_CHF": 0.897,
                          "auc_pneumonia": 0.633},
    "ResNet50": {"accuracy": 0.613, "auc": 0.816, "auc_Normal": 0.845, "auc_CHF": 0.896, "auc_pneumonia": 0.622},
    "UNetS": {"kld": 0.750, "cc": 0.552, "hs": 0.540},
    "SimpleNet": {"kld": 0.758, "cc": 0.545, "hs": 0.541},
    "MSINet": {"kld": 0.748, "cc": 0.557, "hs": 0.545},
    "VGGSSM": {"kld": 0.743, "cc": 0.561, "hs": 0.545},
}


def metric_label(key: str) -> str:
    """An MT-UNet metric as the paper's tables head it: KLD, CC, HS, ACCURACY, AUC, AUC <class>."""
    return key.upper().replace("AUC_", "AUC ")


def median_std(entry: dict, key: str) -> str:
    """``median ± std`` of metric ``key`` of a results.json model entry, or "" where it has none."""
    if key not in entry["metrics"]:
        return ""
    return f"{entry['metrics'][key]:.3f} ± {entry['std'].get(key, 0.0):.3f}"


def compare(run_dirs, out=None, mix_presets: bool = False) -> str:
    """Table 1/2/3-style Markdown of finished runs: median ± std over seeds of every metric,
    training seconds and trainable parameters; the best value of each column in bold. Folders
    that are not mt_unet.train runs are skipped (logged); see :func:`ums_rep.reporting.collect`.
    (``mt_unet.train --compare``.)

    Args:
        run_dirs: The run folders (each its own results.json).
        out: A folder to write ``compare.md`` in; None: none written.
        mix_presets: Allow runs of different presets in one table.

    Returns:
        The Markdown."""
    entries = []
    for _, body in collect(run_dirs, ("mt_unet.train",), recursive=False, mix_presets=mix_presets):
        for e in body["tasks"].values():
            entries.append({**e, "seeds": body["config"].get("seeds"), "preset": body["config"].get("preset")})
    cols = [k for k in METRICS if any(k in e["metrics"] for e in entries)]
    best = {}
    for k in cols:
        vals = [e["metrics"][k] for e in entries if k in e["metrics"]]
        best[k] = min(vals) if k in LOWER_IS_BETTER else max(vals)
    head = ["model", *(metric_label(k) + (" ↓" if k in LOWER_IS_BETTER else " ↑") for k in cols),
            "train s", "params", "seeds"]
    rows = []
    for e in entries:
        cells = [e["label"]]
        for k in cols:
            cell = median_std(e, k)
            cells.append(f"**{cell}**" if cell and math.isclose(e["metrics"][k], best[k]) else cell)
        rows.append(cells + [f"{e['train_seconds']:.0f}", f"{e['trainable_params']:,}", str(e["seeds"])])
    return compare_md("\n".join(markdown_table(head, rows)) + "\n", out)


def tables(runs) -> list:
    """MT-UNet Tables 1–3: one row per model trained (median ± std over seeds), the paper's row
    below each model the paper reports; the report's MT-UNet section (:func:`ums_rep.reporting.build`).

    Args:
        runs: ``(folder, results)`` pairs (:func:`ums_rep.reporting.collect`).

    Returns:
        Markdown lines; none without an ``mt_unet.train`` run."""
    entries = []
    for folder, r in runs:
        if r["command"].startswith("mt_unet.train"):
            for e in r["tasks"].values():
                entries.append((folder, r, e))
    if not entries:
        return []
    keys = METRICS
    c = entries[0][1]["config"]
    anchors = "".join(f"<a id=\"{a}\"></a>" for a in (ANCHOR, *(table_anchor("MT-UNet", t) for t in "123")))
    lines = [f"### {anchors}MT-UNet Tables 1–3 ({c.get('data')}, preset {c.get('preset')}, input "
             f"{'×'.join(map(str, c.get('image', c.get('shape', []))))}, {c.get('seeds')} seed(s); "  # shape: before 2026-12
             f"median ± std; paper below each row)", ""]
    rows = []
    for folder, r, e in entries:
        rows.append([e["label"], *(median_std(e, k) for k in keys), f"{e['train_seconds']:.0f}",
                     f"{e['trainable_params']:,}", f"{r['config'].get('preset')}, {r['config'].get('seeds')}"])
        paper = PAPER.get(e["label"])
        if paper:
            rows.append(["*paper*", *(f"{paper[k]:.3f}" if k in paper else "" for k in keys), "", "", ""])
    lines += markdown_table(["model", *(metric_label(k) for k in keys), "train s", "params", "preset, seeds"], rows)
    lines.append("")
    return lines


reporting.register_kind("mt_unet.train", ("config", "tasks"))
reporting.register_kind("mt_unet.evaluate", ("metrics",), reported=False)
reporting.register_section("MT-UNet", tables)
