"""MT-UNet's claims (Sections 5.1 and 5.2, Tables 1–3) in the claims registry of
:mod:`ums_rep.claims`, and how they are judged on ``mt_unet.train`` runs.

**Registry.** One claim per model pair and metric the paper's text makes a statement about:

* Table 1 (Section 5.1, "MT-UNet outperforms the other classification networks"): MT-UNet
  (MTL3) against UNetC, EfficientNetV2-S, InceptionResNetV2 and ResNet50, on accuracy and AUC;
* Table 2 (Section 5.1, "MT-UNet outperforms the rest"): MT-UNet (MTL3) against UNetS,
  SimpleNet, MSINet and VGGSSM, on KLD, CC and HS;
* Table 3 (Section 5.2): MTL3 against MTL1 and MTL2 ("MTL3 outperforms the rest learning schemes
  both in classification and in saliency prediction") and the full MT-UNet against MT-UNetB and
  MT-UNetT ("MT-UNet generally performs better"), on KLD, CC, HS, accuracy and AUC.

The paper gives no test. Each claim's direction is the one its own table shows (``direction``:
``a`` higher, or lower for KLD); where the table's medians are equal (HS of MT-UNet and
MT-UNetB, 0.548) the claim is one of no difference, and where the table goes against the text
(AUC of MT-UNetT 0.847 against MT-UNet's 0.843) the claim follows the table, with ``a`` the
model the table shows ahead.

**Test** (:func:`seeds_bootstrap_test`): a paired bootstrap over the test images, pooled across
seeds. Both runs trained the same seeds on the same split, so every seed scored the same test
images; a resample draws images with replacement (2,000 resamples, seed 0, the same images for
every seed and both models), and on it each seed's metric is computed as the tables compute it
(KLD, CC, HS: the median over images; accuracy; Hand & Till AUC). ``diff`` is the mean over seeds
of model a's metric minus model b's, on the test split itself; ``ci`` the 2.5 and 97.5
percentiles of the resampled ``diff``; ``p`` the two-sided bootstrap p-value
``2 · min(P*(diff ≤ 0), P*(diff ≥ 0))`` with the add-one correction (the smallest is about 0.001).
The p-values are Holm-corrected within each table (``task_set`` is the table). Verdicts are
:func:`ums_rep.claims.comparison_verdict`'s; a claim whose model was not run is ``not run``, and
one whose model did not beat chance on the validation split in some seed (``mt_unet.train``
records ``learned_on_validation`` per seed: :func:`mt_unet.scoring.learned`) is ``not learned``
and kept out of the Holm family.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.egd import CLASSES
from ums_rep import claims as registry
from ums_rep.metrics import N_RESAMPLES, SEED, auc_resampled, resample_indices, resample_weights
from mt_unet.naming import label
from mt_unet.reporting import LOWER_IS_BETTER, PAPER as PAPER_TABLES
from mt_unet.tasks import DISEASE, SALIENCY

PAPER = "MT-UNet"
KIND = "mt_unet"
MTL3, MTL1, MTL2 = label("mtunet", "full", "mtl3"), label("mtunet", "full", "mtl1"), label("mtunet", "full", "mtl2")
BOTTLENECK, TOP = label("mtunet", "bottleneck", "mtl3"), label("mtunet", "top", "mtl3")
SALIENCY_METRICS, CLASSIFICATION_METRICS = ("kld", "cc", "hs"), ("accuracy", "auc")
# (table, section, the text's statement, model a, the models it is compared with, metrics)
STATEMENTS = [
    ("1", "Section 5.1", "MT-UNet outperforms the other classification networks", MTL3,
     [label(m) for m in ("unetc", "efficientnetv2s", "inceptionresnetv2", "resnet50")], CLASSIFICATION_METRICS),
    ("2", "Section 5.1", "MT-UNet outperforms the rest", MTL3,
     [label(m) for m in ("unets", "simplenet", "msinet", "vggssm")], SALIENCY_METRICS),
    ("3", "Section 5.2", "MTL3 outperforms the rest learning schemes both in classification and in saliency "
                         "prediction", MTL3, [MTL1, MTL2], SALIENCY_METRICS + CLASSIFICATION_METRICS),
    ("3", "Section 5.2", "MT-UNet generally performs better than MT-UNetT and MT-UNetB", MTL3, [BOTTLENECK, TOP],
     SALIENCY_METRICS + CLASSIFICATION_METRICS),
]
METHOD = (
    "MT-UNet's tables give no test. Ours: a paired bootstrap over the test images pooled across seeds — both runs "
    f"trained the same seeds on the same split; {N_RESAMPLES} resamples of the test images (seed {SEED}), the same "
    "images for every seed and both models; on each, every seed's metric as the tables compute it (KLD, CC, HS: "
    "median over images; accuracy; Hand & Till AUC). diff = the mean over seeds of a − b on the test split, with the "
    "resamples' 95% percentile interval; p = 2·min(P*(diff ≤ 0), P*(diff ≥ 0)), add-one corrected; Holm within each "
    "table. Each claim's direction is the one the paper's table shows (where the table's medians are equal, a claim "
    "of no difference).")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def mt_unet_claims() -> list:
    """One :class:`ums_rep.claims.Claim` per model pair and metric of :data:`STATEMENTS`, its
    direction as the paper's table shows it (see the module docstring).

    Returns:
        The claims, table by table."""
    out = []
    for table, section, statement, a, others, metric_names in STATEMENTS:
        for b in others:
            for m in metric_names:
                pa, pb = PAPER_TABLES[a][m], PAPER_TABLES[b][m]
                lower = m in LOWER_IS_BETTER
                first, second = (a, b) if (pa < pb if lower else pa > pb) or pa == pb else (b, a)
                finding = "not significant" if pa == pb else "direction"
                said = (f"{first} and {second} equal on {m.upper()} ({pa:.3f})" if pa == pb else
                        f"{first} {'lower' if lower else 'higher'} {m.upper()} than {second} "
                        f"({PAPER_TABLES[first][m]:.3f} vs {PAPER_TABLES[second][m]:.3f})")
                out.append(registry.Claim(
                    f"mt-unet/table-{table}/{m}/{_slug(first)}-vs-{_slug(second)}", PAPER,
                    f"{section}, Table {table}", table, f"Table {table}", m, first, second, finding, said,
                    quote=statement, kind=KIND, lower_is_better=lower))
    return out


def mt_unet_runs(runs) -> dict:
    """The ``mt_unet.train`` runs among ``runs`` by the label of the model they trained.

    Args:
        runs: ``(folder, results)`` pairs (``ums_rep.reporting.collect``).

    Returns:
        ``{label: [(folder, results), ...]}``."""
    found = {}
    for folder, body in runs:
        if body.get("command", "").startswith("mt_unet.train"):
            for name in body["tasks"]:
                found.setdefault(name, []).append((Path(folder), body))
    return found


def _seed_tables(folder: Path, body: dict) -> dict:
    entry = next(iter(body["tasks"].values()))
    tables = {}
    for rec in entry["per_seed"]:
        path = folder / f"seed{rec['seed']}" / "predictions_test.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the run's per-image test predictions)")
        tables[rec["seed"]] = pd.read_csv(path).sort_values("id").reset_index(drop=True)
    return tables


def _statistic(metric: str, table: pd.DataFrame, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric as the tables compute it, on each resample (a row of ``idx`` / ``weights``)."""
    if metric in SALIENCY_METRICS:
        return np.median(table[metric].to_numpy(float)[idx], axis=1)
    if metric == "accuracy":
        return table["correct"].to_numpy(float)[idx].mean(axis=1)
    if metric == "auc":
        y = table["truth"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy(int)
        return auc_resampled(y, table[[f"p_{c}" for c in CLASSES]].to_numpy(float), weights)
    raise ValueError(f"unknown MT-UNet metric {metric!r}")


def seeds_bootstrap_test(run_a, run_b, metric: str, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """The paired bootstrap over test images pooled across seeds (see the module docstring).

    Args:
        run_a: ``(folder, results)`` of model a's ``mt_unet.train`` run.
        run_b: the same of model b.
        metric: ``kld``, ``cc``, ``hs``, ``accuracy`` or ``auc``.
        n_resamples: how many resamples.
        seed: the resampling seed.

    Returns:
        ``{"test", "metric", "p", "diff", "ci", "n", "seeds"}``; ``diff`` is a − b.

    Raises:
        ValueError: (one line naming both runs) when they used another data seed or preset, trained
            other seeds, or scored other test images."""
    (fa, ba), (fb, bb) = run_a, run_b
    if ba.get("seed") != bb.get("seed"):
        raise ValueError(f"{fa} and {fb}: not comparable (data seed {ba.get('seed')} vs {bb.get('seed')})")
    if ba["config"].get("preset") != bb["config"].get("preset"):
        raise ValueError(f"{fa} and {fb}: not comparable (preset {ba['config'].get('preset')} vs "
                         f"{bb['config'].get('preset')})")
    ta, tb = _seed_tables(Path(fa), ba), _seed_tables(Path(fb), bb)
    if sorted(ta) != sorted(tb):
        raise ValueError(f"{fa} and {fb}: not comparable (seeds {sorted(ta)} vs {sorted(tb)})")
    ids = None
    for s in ta:
        if not ta[s]["id"].equals(tb[s]["id"]) or (ids is not None and not ta[s]["id"].equals(ids)):
            raise ValueError(f"{fa} and {fb}: not comparable (seed {s} scored other test images)")
        ids = ta[s]["id"]
        for name, t, f in (("a", ta[s], fa), ("b", tb[s], fb)):
            need = [metric] if metric in SALIENCY_METRICS else ["correct"] if metric == "accuracy" else \
                ["truth", *(f"p_{c}" for c in CLASSES)]
            missing = [c for c in need if c not in t]
            if missing:
                raise ValueError(f"{f}: seed {s}'s predictions_test.csv has no {missing} (does the model predict "
                                 f"{'saliency' if metric in SALIENCY_METRICS else 'the class'}?)")
    n = len(ids)
    idx = np.vstack([np.arange(n)[None, :], resample_indices(n, n_resamples, seed)])
    weights = resample_weights(idx, n)
    diffs = np.mean([_statistic(metric, ta[s], idx, weights) - _statistic(metric, tb[s], idx, weights) for s in ta],
                    axis=0)
    point, boot = float(diffs[0]), diffs[1:]
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return {"test": "", "metric": metric, "p": math.nan, "diff": point, "ci": (math.nan, math.nan), "n": n,
                "seeds": sorted(ta)}
    p = min(1.0, 2 * min((1 + np.sum(boot <= 0)) / (1 + len(boot)), (1 + np.sum(boot >= 0)) / (1 + len(boot))))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"test": f"paired bootstrap over test images pooled across {len(ta)} seeds", "metric": metric,
            "p": float(p), "diff": point, "ci": (float(lo), float(hi)), "n": n, "seeds": sorted(ta)}


def judge_mt_unet(claim, runs):
    """Judge one MT-UNet claim on ``runs`` (the ``mt_unet`` entry of :data:`ums_rep.claims.JUDGES`).

    Args:
        claim: a claim of :func:`mt_unet_claims`.
        runs: ``(folder, results)`` pairs.

    Returns:
        A :class:`ums_rep.claims.Judged` without its Holm p and verdict (``judge`` adds them);
        ``not run`` with a note when a model's run is missing or given twice."""
    found = mt_unet_runs(runs)
    pair = []
    for name in (claim.a, claim.b):
        got = found.get(name, [])
        if len(got) != 1:
            return registry.Judged(claim, note=f"no {name} run" if not got else
                                   f"{len(got)} {name} runs ({', '.join(str(f) for f, _ in got)}): give one")
        pair.append(got[0])
    t = seeds_bootstrap_test(pair[0], pair[1], claim.task)
    extra = {"metric": claim.task, "n": t["n"], "seeds": t["seeds"]}
    # a model whose task did not beat chance on the validation split in some seed is no fair comparison:
    # its test is shown, not judged (judge() keeps it out of the Holm family)
    unlearned = [name for name, (_, body) in zip((claim.a, claim.b), pair) if not learned(body, claim.task)]
    if unlearned:
        extra["not_learned"] = unlearned
    return registry.Judged(claim, test=t["test"], p=t["p"], diff=t["diff"], ci=t["ci"], extra=extra,
                           note=f"{' and '.join(unlearned)} did not beat chance on the validation split in every "
                                f"seed" if unlearned else "")


def learned(body: dict, metric: str) -> bool:
    """Whether the run's model learned the task ``metric`` measures in every seed, by the flags
    ``mt_unet.train`` records (``learned_on_validation``: the disease head beats the majority
    class, the saliency map the uniform map, on the validation split). Runs that predate the
    flags count as learned.

    Args:
        body: the run's results.json.
        metric: ``kld``, ``cc``, ``hs``, ``accuracy`` or ``auc``.

    Returns:
        False when some seed's flag for that task is False."""
    task = SALIENCY if metric in SALIENCY_METRICS else DISEASE
    entry = next(iter(body["tasks"].values()))
    return all(rec.get("learned_on_validation", {}).get(task, True) for rec in entry["per_seed"])


registry.JUDGES[KIND] = judge_mt_unet
registry.register_method(PAPER, METHOD)
if not any(c.paper == PAPER for c in registry.REGISTRY):
    registry.register(*mt_unet_claims())
