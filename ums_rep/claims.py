"""The papers' claims as data, and how each is judged on the runs at hand.

**Registry.** :data:`REGISTRY` holds one :class:`Claim` per claim a paper states: UMS-Rep's
strategy comparisons, one entry per task (Sections 4.1.2 and 4.2.2, Tables 3, 5, 7, 9), and its
time and parameter savings (Tables 4, 6, 8, 10). Another paper's package appends its own entries
with :func:`register`, for a new kind of claim its judge to :data:`JUDGES`, and its tests' wording
with :func:`register_method`; it names the module that does so under the entry-point group
:data:`ums_rep.plugins.PLUGIN_GROUP`, which :func:`judge` loads (:func:`ums_rep.plugins.load`),
so this module names no other paper.

A comparison's ``finding`` is what the paper reports of arm ``a`` against arm ``b``:

* ``"better"`` — ``a`` better than ``b``, significantly (UMS-Rep: McNemar p < 0.05);
* ``"direction"`` — ``a`` higher than ``b``, no test stated;
* ``"not significant"`` — no significant difference.

**Tests** (:func:`paired_test`), on the two runs' ``predictions_<task>.csv``, images paired by
their id:

* classification — the exact McNemar test (a binomial test on the discordant pairs,
  statsmodels ``mcnemar(table, exact=True)``) on the per-image ``correct`` column; ``diff`` is the
  accuracy of ``a`` minus that of ``b``, with a paired bootstrap 95% CI, and the AUC difference
  (Hand & Till one-vs-one for more than two classes, as :func:`ums_rep.metrics.auc`) with its own;
* segmentation — the Wilcoxon signed-rank test (scipy, two-sided, zero differences dropped) on
  the per-image Dice; ``diff`` is the mean per-image foreground IoU of ``a`` minus that of ``b``,
  with a paired bootstrap 95% CI;
* the bootstrap (:func:`ums_rep.metrics.bootstrap_ci`) draws 2,000 resamples of the test images
  with replacement (seed 0), the same images for both arms, and reads the CI off the percentiles;
* the p-values of a task set's tested claims are Holm-corrected together (statsmodels
  ``multipletests(method="holm")``).

The statistics themselves are :mod:`ums_rep.metrics`' (``mcnemar``, ``wilcoxon_paired``, ``holm``,
``bootstrap_ci``, ``auc_resampled``).

**Verdicts** (α = 0.05 on the Holm-corrected p): a ``better`` or ``direction`` claim *agrees*
when the difference is significant and in the paper's direction, is *reversed* when it is
significant the other way, and is *not significant* otherwise; a ``not significant`` claim
*agrees (n.s.)* or *differs (significant)*. A claim whose runs or predictions are missing is
*not run*.

**Cost rule** (:data:`COST_RULE`, the one rule for every task set): the source model (the shared
encoder's pretraining) counts on the shared side and, for chest X-ray, the separately trained
denoiser on the baseline's side, as UMS-Rep's Tables 4, 8 and 10 count them. Table 6 (cxr-homo)
leaves its 302.20-minute, 800,067-parameter source model out on both sides; its claim shows the
paper's ratio and the same ratio recomputed under this rule
(:attr:`Claim.paper_ratio_package_rule`).

**Savings** (:func:`saving_verdict`): the time saving is judged fold by fold — fold *k*'s ratio is
(source seconds + fold *k*'s fine-tuning seconds summed over the tasks) of ``a`` over the
baseline's same; ``diff`` is that ratio for the folds' mean seconds, ``ci`` the range of the
folds' ratios — and *agrees* only when every fold's ratio lies on the paper's side of 1,
*reversed* when every one lies on the other side, and is *inconclusive* otherwise. Runs that
recorded no per-fold seconds are judged on their totals' ratio (and say so). Parameters do not
vary by fold: their single ratio is judged.

**Comparability** (:func:`check_comparable`, :func:`aligned_predictions`): two runs are compared
only when they share the seed, the fold assignment (``config["folds_sha1"]``) and the encoder
(``config["encoder_sha1"]``) where both record them, and scored the same test images; otherwise a
one-line ``ValueError`` names both run folders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ums_rep import plugins
from ums_rep.paper_results import PAPER
from ums_rep.metrics import auc_resampled, bootstrap_ci, holm, mcnemar, weighted_mean, wilcoxon_paired

FINDINGS = ("better", "direction", "not significant")
ALPHA = 0.05
COMPARED_KEYS = ("seed", "encoder_sha1", "folds_sha1")  # results.json's seed; the others in its config
COST_RULE = ("the source model (the shared encoder's pretraining) counts on the shared side and, for "
             "chest X-ray, the separately trained denoiser on the baseline's side, as UMS-Rep's Tables 4, 8 "
             "and 10 count them; Table 6 (cxr-homo) leaves its source model out on both sides, so its paper "
             "ratio is shown as printed and recomputed under this rule")
VERDICTS = ("agrees", "agrees (n.s.)", "reversed", "differs (significant)", "not significant", "inconclusive",
            "not learned", "not run")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper: arm ``a`` against arm ``b`` on ``task`` of ``task_set``.

    ``kind`` is ``"comparison"`` (``finding`` one of :data:`FINDINGS`) or ``"saving"`` (``what``
    is ``"time"`` or ``"parameters"``; ``finding`` ``"better"``: ``a`` costs less than ``b``).
    ``table`` is the number of the paper's table the claim is read from, ``section`` the place
    in the paper."""

    claim_id: str
    paper: str
    section: str
    table: str
    task_set: str
    task: str | None
    a: str
    b: str
    finding: str
    paper_finding: str
    quote: str = ""
    kind: str = "comparison"
    what: str | None = None
    lower_is_better: bool = False  # a comparison's metric (e.g. KLD): "a better than b" means a − b < 0

    def __post_init__(self):
        if self.finding not in FINDINGS:
            raise ValueError(f"claim {self.claim_id}: finding {self.finding!r} is not one of {FINDINGS}")

    @property
    def paper_ratio(self) -> float | None:
        """A saving's ratio ``a / b`` as the paper prints it (``ums_rep.paper_results.PAPER["compute"]``)."""
        return _paper_ratio(self, package_rule=False)

    @property
    def paper_ratio_package_rule(self) -> float | None:
        """A saving's paper ratio recomputed under :data:`COST_RULE` (the source model the paper
        left out of both sides added to both)."""
        return _paper_ratio(self, package_rule=True)

    @property
    def paper_statement(self) -> str:
        """``paper_finding`` with its evidence: a comparison's quote, a saving's paper ratio (and,
        where it differs, the ratio under :data:`COST_RULE`)."""
        if self.kind == "saving" and self.paper_ratio is not None:
            text = f"{self.paper_finding}: ratio {self.paper_ratio:.2f}"
            if self.paper_ratio_package_rule != self.paper_ratio:
                text += f" as printed, {self.paper_ratio_package_rule:.2f} under the package's cost rule"
            return text
        return self.paper_finding + (f" (“{self.quote}”)" if self.quote else "")


def _paper_ratio(claim: Claim, package_rule: bool) -> float | None:
    if claim.kind != "saving":
        return None
    c = PAPER["compute"].get(claim.task_set)
    if c is None:
        return None
    i = 0 if claim.what == "time" else 1
    extra = c.get("left_out", (0, 0))[i] if package_rule else 0
    return (extra + c["shared"][i]) / (extra + c["baseline"][i])


REGISTRY: list[Claim] = []
METHODS: dict[str, str] = {}  # paper → how its comparison claims are tested (the report's text), register_method


def register(*claims: Claim) -> None:
    """Append claims to :data:`REGISTRY` (another paper's package adds its own).

    Args:
        *claims: the entries; their ``claim_id`` must be new.

    Returns:
        None. Raises ``ValueError`` on a repeated ``claim_id``."""
    known = {c.claim_id for c in REGISTRY}
    for c in claims:
        if c.claim_id in known:
            raise ValueError(f"claim {c.claim_id} is registered already")
        known.add(c.claim_id)
        REGISTRY.append(c)


def register_method(paper: str, text: str) -> None:
    """Say how ``paper``'s comparison claims are tested (the report prints it above their table).

    Args:
        paper: the paper's name as its claims give it.
        text: the tests, the difference reported and its CI, the correction (Markdown)."""
    METHODS[paper] = text


# --------------------------------------------------------------------------- UMS-Rep's claims

_UMS_SETS = {  # task set → (section, performance table, cost table, the approach the paper proposes)
    "cxr-hetero": ("4.1.2", "3", "4", "independent"),
    "cxr-homo": ("4.1.2", "5", "6", "joint"),
    "echo-hetero": ("4.2.2", "7", "8", "independent"),
    "echo-homo": ("4.2.2", "9", "10", "joint"),
}
# task set → (a, b, finding or {task: finding, None: default}, the paper's finding, quote)
_UMS_PAIRS = {
    "cxr-hetero": [
        ("independent", "joint", "better", "independent better than joint, significant", ""),
        ("independent", "alternating", "not significant", "independent vs alternating: no significant difference",
         ""),
        ("independent", "baseline", "better", "independent better than the baseline, significant", ""),
    ],
    "cxr-homo": [
        ("joint", "independent", {"bacterial_vs_normal": "not significant", None: "better"},
         "joint better than independent, significant for every task but bacterial vs normal",
         "significant … except for bacterial vs normal"),
        ("joint", "alternating", "direction", "joint higher than alternating (no test stated)",
         "joint achieved higher performance than both alternating and independent in most cases"),
        ("alternating", "independent", "direction", "alternating higher than independent (no test stated)",
         "the alternating fine-tuning strategy achieved better performance than the independent strategy"),
        ("joint", "baseline", "better", "joint better than the baseline, significant for every task", ""),
    ],
    "echo-hetero": [
        ("independent", "joint", "better", "independent better than joint, significant", ""),
        ("independent", "baseline", "better", "independent better than the baseline, significant", ""),
    ],
    "echo-homo": [
        ("joint", "independent", "better", "joint better than independent, significant", ""),
        ("joint", "alternating", "not significant", "joint vs alternating: not significant",
         "not significant in most cases"),
        ("joint", "baseline", "better", "joint better than the baseline, significant", ""),
    ],
}


def _ums_rep_claims() -> list[Claim]:
    from ums_rep.tasks import TASK_SETS
    out = []
    for set_name, (section, perf, cost, proposed) in _UMS_SETS.items():
        for a, b, finding, said, quote in _UMS_PAIRS[set_name]:
            for spec in TASK_SETS[set_name]["tasks"]:
                task = spec.task.name
                f, text = finding, said
                if isinstance(finding, dict):
                    f = finding.get(task, finding[None])
                    if f != finding[None]:
                        text = f"{a} vs {b} on {task}: not significant"
                out.append(Claim(f"ums-rep/{set_name}/{task}/{a}-vs-{b}", "UMS-Rep",
                                 f"Section {section}, Table {perf}", perf, set_name, task, a, b, f, text, quote))
        for what in ("time", "parameters"):
            out.append(Claim(f"ums-rep/{set_name}/{what}-saving/{proposed}-vs-baseline", "UMS-Rep",
                             f"Section {section}, Table {cost}", cost, set_name, None, proposed, "baseline", "better",
                             f"{proposed} needs less training time than the baseline" if what == "time"
                             else f"{proposed} trains fewer parameters than the baseline", kind="saving", what=what))
    return out


register(*_ums_rep_claims())


# --------------------------------------------------------------------------- pairing and comparability

def _run_value(body: dict, key: str):
    return body.get("seed") if key == "seed" else body.get("config", {}).get(key)


def check_comparable(run_a, run_b) -> None:
    """Refuse two runs that do not share the seed, the fold assignment or the encoder.

    Args:
        run_a: ``(folder, results)`` of one run.
        run_b: ``(folder, results)`` of the other.

    Returns:
        None. Raises a one-line ``ValueError`` naming both folders and the key when both runs
        record one of :data:`COMPARED_KEYS` with different values."""
    (da, ra), (db, rb) = run_a, run_b
    for key in COMPARED_KEYS:
        va, vb = _run_value(ra, key), _run_value(rb, key)
        if va is not None and vb is not None and va != vb:
            raise ValueError(f"{da} and {db}: different {key} ({va!r} vs {vb!r}); compared runs must share the "
                             "seed, the fold assignment and the encoder")


def _read_predictions(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"id": str})
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable predictions table ({e})".replace("\n", " ")) from e
    if "id" not in table:
        raise ValueError(f"{path}: no id column")
    dup = table["id"][table["id"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: image id(s) {sorted(set(dup))[:3]} appear more than once")
    return table.set_index("id")


def aligned_predictions(folder_a, folder_b, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both runs' ``predictions_<task>.csv``, the second's rows in the first's id order.

    Args:
        folder_a: one run folder.
        folder_b: the other.
        task: the task whose predictions to pair.

    Returns:
        ``(a, b)`` indexed by image id, row i of both the same image. Raises a one-line
        ``ValueError`` naming both folders when their test images differ (partly or wholly)."""
    a = _read_predictions(Path(folder_a) / f"predictions_{task}.csv")
    b = _read_predictions(Path(folder_b) / f"predictions_{task}.csv")
    ia, ib = set(a.index), set(b.index)
    if ia != ib:
        raise ValueError(f"{folder_a} and {folder_b}: different test images for {task} ({len(ia - ib)} only in "
                         f"the first, {len(ib - ia)} only in the second, {len(ia & ib)} in both); compare runs "
                         "scored on the same test set")
    return a, b.loc[a.index]


def _correct(table: pd.DataFrame, path: str) -> np.ndarray:
    if "correct" in table:
        return table["correct"].astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    if {"truth", "pred"} <= set(table):
        return (table["truth"] == table["pred"]).to_numpy()
    raise ValueError(f"{path}: neither a dice nor a correct column")


def _iou(table: pd.DataFrame) -> np.ndarray:
    if "iou" in table:
        return table["iou"].to_numpy(float)
    d = table["dice"].to_numpy(float)  # older tables: a binary mask's IoU is Dice / (2 − Dice)
    return d / (2 - d)


def _probabilities(a: pd.DataFrame, b: pd.DataFrame):
    cols = [c for c in a if c.startswith("p_")]
    if len(cols) < 2 or "truth" not in a or "truth" not in b or cols != [c for c in b if c.startswith("p_")]:
        return None
    return a["truth"].to_numpy(int), a[cols].to_numpy(float), b[cols].to_numpy(float)


def paired_test(run_a, run_b, task: str, bootstrap: bool = True) -> dict:
    """The paired test of two runs on one task (see the module docstring), after
    :func:`check_comparable` and :func:`aligned_predictions`.

    Args:
        run_a: ``(folder, results)`` of arm a.
        run_b: ``(folder, results)`` of arm b.
        task: the task.
        bootstrap: also compute the paired bootstrap CIs (else they are NaN).

    Returns:
        ``{"test", "metric", "p", "diff", "ci", "n", "discordant"}`` and, for classification with
        probabilities, ``"auc_diff"``, ``"auc_ci"``; ``diff`` is a − b (accuracy, or the mean
        per-image IoU), ``discordant`` ``(only a right, only b right)`` or None."""
    check_comparable(run_a, run_b)
    (da, _), (db, _) = run_a, run_b
    a, b = aligned_predictions(da, db, task)
    n = len(a)
    nan_ci = (math.nan, math.nan)
    if "dice" in a or "dice" in b:
        if "dice" not in a or "dice" not in b:
            raise ValueError(f"{da} and {db}: {task} is segmented in one run and classified in the other")
        w = wilcoxon_paired(a["dice"], b["dice"])
        ia, ib = _iou(a), _iou(b)
        if bootstrap:
            diff, ci = bootstrap_ci(lambda wt: weighted_mean(ia, wt) - weighted_mean(ib, wt), n)
        else:
            diff, ci = float(np.mean(ia) - np.mean(ib)), nan_ci
        return {"test": "Wilcoxon signed-rank on per-image Dice", "metric": "mean per-image IoU", "p": w["p_value"],
                "diff": diff, "ci": ci, "n": n, "discordant": None}
    ca, cb = _correct(a, f"{da}/predictions_{task}.csv"), _correct(b, f"{db}/predictions_{task}.csv")
    m = mcnemar(ca, cb)
    if bootstrap:
        diff, ci = bootstrap_ci(lambda wt: weighted_mean(ca, wt) - weighted_mean(cb, wt), n)
    else:
        diff, ci = float(ca.mean() - cb.mean()), nan_ci
    out = {"test": "exact McNemar on per-image correctness", "metric": "accuracy", "p": m["p_value"], "diff": diff,
           "ci": ci, "n": n, "discordant": (m["table"][0][1], m["table"][1][0])}
    probs = _probabilities(a, b)
    if probs is not None and bootstrap:
        y, pa, pb = probs
        out["auc_diff"], out["auc_ci"] = bootstrap_ci(lambda wt: auc_resampled(y, pa, wt) - auc_resampled(y, pb, wt), n)
    return out


# --------------------------------------------------------------------------- judging

@dataclass
class Judged:
    """A claim and what the runs say of it (fields as in ``claims.json``; ``note`` and
    ``extra`` for the report)."""

    claim: Claim
    test: str = ""
    p: float = math.nan
    p_holm: float = math.nan
    diff: float = math.nan
    ci: tuple | None = None
    verdict: str = "not run"
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        """The ``claims.json`` object: exactly ``claim_id, paper, section, task_set, task, a, b,
        paper_finding, test, p, p_holm, diff, ci, verdict``, NaN as null.

        Returns:
            A JSON-serialisable dict."""
        def num(v):
            return None if v is None or not math.isfinite(v) else float(v)
        c = self.claim
        ci = None if self.ci is None or not all(math.isfinite(v) for v in self.ci) else [float(v) for v in self.ci]
        return {"claim_id": c.claim_id, "paper": c.paper, "section": c.section, "task_set": c.task_set,
                "task": c.task, "a": c.a, "b": c.b, "paper_finding": c.paper_statement, "test": self.test,
                "p": num(self.p), "p_holm": num(self.p_holm), "diff": num(self.diff), "ci": ci,
                "verdict": self.verdict}


def finetune_arms(runs) -> dict:
    """The finetune runs among ``runs`` by task set and strategy.

    Args:
        runs: ``(folder, results)`` pairs (``ums_rep.reporting.collect``).

    Returns:
        ``{task set: {strategy: [(folder, results), ...]}}``."""
    arms = {}
    for folder, r in runs:
        if r["command"].startswith("finetune"):
            arms.setdefault(r["config"]["tasks"], {}).setdefault(r["config"]["strategy"], []).append((folder, r))
    return arms


def _arm(arms: dict, task_set: str, strategy: str):
    found = arms.get(task_set, {}).get(strategy, [])
    if not found:
        return f"no {strategy} run of {task_set}"
    if len(found) > 1:
        return f"{len(found)} {strategy} runs of {task_set} ({', '.join(str(f) for f, _ in found)}): give one"
    return found[0]


def _judge_comparison(claim: Claim, runs) -> Judged:
    arms = finetune_arms(runs)
    ra, rb = _arm(arms, claim.task_set, claim.a), _arm(arms, claim.task_set, claim.b)
    for r in (ra, rb):
        if isinstance(r, str):
            return Judged(claim, note=r)
    for folder, body in (ra, rb):
        if claim.task not in body["tasks"] or not (Path(folder) / f"predictions_{claim.task}.csv").is_file():
            return Judged(claim, note=f"{folder}: no predictions_{claim.task}.csv")
    t = paired_test(ra, rb, claim.task)
    extra = {k: t[k] for k in ("metric", "n", "discordant", "auc_diff", "auc_ci") if k in t}
    # an arm whose head did not learn on a validation fold is no fair comparison: its test is shown,
    # not judged (and left out of the Holm family)
    unlearned = [body["config"]["strategy"] for _, body in (ra, rb)
                 if not all(body["tasks"][claim.task].get("learned_on_validation", [True]))]
    if unlearned:
        extra["not_learned"] = unlearned
    return Judged(claim, test=t["test"], p=t["p"], diff=t["diff"], ci=t["ci"], extra=extra,
                  note=f"{' and '.join(unlearned)} did not learn {claim.task} on every validation fold" if unlearned
                  else "")


def _source_seconds(body: dict) -> float:
    src = body.get("source") or body["tasks"].get("denoiser")  # "denoiser": older runs' task entry
    return float(src.get("train_seconds", 0.0)) if src else 0.0


def fold_seconds(body: dict) -> list | None:
    """Each fold's fine-tuning seconds summed over the tasks (``config.fold_records[k]["seconds"]``).

    Args:
        body: a finetune results.json.

    Returns:
        One total per fold, or None when a fold record lacks its seconds (older runs)."""
    recs = body.get("config", {}).get("fold_records") or []
    if not recs or any(not isinstance(rec.get("seconds"), dict) for rec in recs):
        return None
    return [float(sum(rec["seconds"].values())) for rec in recs]


def saving_verdict(ratios, paper_ratio: float) -> str:
    """A saving's verdict from our ratios ``a / b`` (one per fold, or a single one).

    Args:
        ratios: our ratios.
        paper_ratio: the paper's (under the package's cost rule).

    Returns:
        ``agrees`` when every ratio lies on the paper's side of 1, ``reversed`` when every one
        lies on the other side, ``inconclusive`` otherwise."""
    r = np.asarray(ratios, float)
    saves = paper_ratio < 1
    if (r < 1).all():
        return "agrees" if saves else "reversed"
    if (r > 1).all():
        return "reversed" if saves else "agrees"
    return "inconclusive"


def _judge_saving(claim: Claim, runs) -> Judged:
    arms = finetune_arms(runs)
    ra, rb = _arm(arms, claim.task_set, claim.a), _arm(arms, claim.task_set, claim.b)
    for r in (ra, rb):
        if isinstance(r, str):
            return Judged(claim, note=r)
    check_comparable(ra, rb)
    (_, a), (_, b) = ra, rb
    if claim.what == "parameters":
        ratio = a["total_params"] / max(b["total_params"], 1)
        return Judged(claim, test="trainable parameters a / b (one ratio: they do not vary by fold)", diff=ratio,
                      verdict=saving_verdict([ratio], claim.paper_ratio_package_rule), extra={"ratios": [ratio]})
    total = a["total_train_seconds"] / max(b["total_train_seconds"], 1e-9)
    fa, fb = fold_seconds(a), fold_seconds(b)
    if fa is not None and fb is not None and len(fa) == len(fb):
        sa, sb = _source_seconds(a), _source_seconds(b)
        ratios = [(sa + x) / max(sb + y, 1e-9) for x, y in zip(fa, fb)]
        mean = (sa + np.mean(fa)) / max(sb + np.mean(fb), 1e-9)  # a weighted mean of the folds' ratios
        return Judged(claim, test="training time a / b per fold: (source s + the fold's fine-tuning s, summed over "
                                  "tasks) / the baseline's same; diff = that ratio for the folds' mean seconds, "
                                  "ci = range over folds",
                      diff=float(mean), ci=(min(ratios), max(ratios)),
                      verdict=saving_verdict(ratios, claim.paper_ratio_package_rule), extra={"ratios": ratios})
    return Judged(claim, test="training time a / b, totals (no per-fold seconds recorded)", diff=total,
                  verdict=saving_verdict([total], claim.paper_ratio_package_rule), extra={"ratios": [total]},
                  note="judged on the totals: the runs recorded no per-fold seconds")


# kind → judge(claim, runs) → Judged (test, p, diff, ci, extra; judge() adds the Holm p and the verdict of
# every kind but "saving"); another paper's package adds its kinds
JUDGES = {"comparison": _judge_comparison, "saving": _judge_saving}


def comparison_verdict(finding: str, diff: float, p_holm: float, alpha: float = ALPHA) -> str:
    """A comparison's verdict (see the module docstring).

    Args:
        finding: the paper's finding (:data:`FINDINGS`).
        diff: how much better a is than b (a − b; b − a for a metric where lower is better).
        p_holm: our Holm-corrected p-value (NaN: not run).
        alpha: the significance level.

    Returns:
        One of :data:`VERDICTS`."""
    if not math.isfinite(p_holm):
        return "not run"
    significant = p_holm < alpha
    if finding == "not significant":
        return "differs (significant)" if significant else "agrees (n.s.)"
    if not significant or diff == 0 or not math.isfinite(diff):
        return "not significant"
    return "agrees" if diff > 0 else "reversed"


def judge(runs, registry=None) -> list[Judged]:
    """Every claim of ``registry`` (default :data:`REGISTRY`) judged on ``runs``: each kind by its
    judge in :data:`JUDGES`, the p-values Holm-corrected within each paper's task set.

    Args:
        runs: ``(folder, results)`` pairs (``ums_rep.reporting.collect``).
        registry: the claims (default: every registered one).

    Returns:
        One :class:`Judged` per claim, in the registry's order. Raises ``ValueError`` (one line
        naming both runs) when compared runs are not comparable."""
    if registry is None:
        plugins.load()
        registry = REGISTRY
    runs = list(runs)
    judged = [JUDGES[c.kind](c, runs) for c in registry]
    families = {}
    for j in judged:
        if j.claim.kind != "saving" and math.isfinite(j.p) and not j.extra.get("not_learned"):
            families.setdefault((j.claim.paper, j.claim.task_set), []).append(j)
    for family in families.values():
        for j, p in zip(family, holm([j.p for j in family])):
            j.p_holm = float(p)
    for j in judged:
        if j.claim.kind != "saving":
            better_by = -j.diff if j.claim.lower_is_better else j.diff
            j.verdict = "not learned" if j.extra.get("not_learned") else \
                comparison_verdict(j.claim.finding, better_by, j.p_holm)
    return judged
