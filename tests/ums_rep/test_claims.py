"""The claims registry judged as UMS-Rep states its claims (Sections 4.1.2 and 4.2.2, Tables 3-10),
and the pairing invariants of the paired tests: synthetic run folders (results.json and
predictions_<task>.csv), no training."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ums_rep import claims, metrics, reporting

FIELDS = ["claim_id", "paper", "section", "task_set", "task", "a", "b", "paper_finding", "test", "p", "p_holm",
          "diff", "ci", "verdict"]
N = 80
IDS = [f"img{i:03d}" for i in range(N)]


def rows_of(markdown: str) -> list:
    """The cells of every Markdown table row (as tests.helpers.table_rows, without its TensorFlow import)."""
    return [[c.strip() for c in line.strip()[1:-1].split("|")] for line in markdown.splitlines()
            if line.strip().startswith("|") and set(line.strip()) - set("|:- ")]


def classification(correct, seed=0, classes=("normal", "tb")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, bool)
    truth = np.arange(len(correct)) % len(classes)
    pred = np.where(correct, truth, (truth + 1) % len(classes))
    p = rng.uniform(0.0, 0.3, (len(correct), len(classes)))
    p[np.arange(len(correct)), pred] += 1.0
    p /= p.sum(axis=1, keepdims=True)
    return pd.DataFrame({"id": IDS[:len(correct)], "truth": truth, "pred": pred, "correct": correct,
                         **{f"p_{c}": p[:, i] for i, c in enumerate(classes)}})


def segmentation(dice) -> pd.DataFrame:
    dice = np.clip(np.asarray(dice, float), 0, 1)
    return pd.DataFrame({"id": IDS[:len(dice)], "dice": dice, "iou": dice / (2 - dice), "iou_mean": (1 + dice) / 2})


def make_run(root, task_set, strategy, predictions: dict, *, seed=0, config=None, fold_seconds=None,
             source_seconds=None, total_params=1000, shuffle=False):
    """A finished finetune run folder: results.json with the keys reporting.collect needs, and each
    task's predictions (rows shuffled if ``shuffle``). ``fold_seconds``: per fold, per task."""
    folder = root / f"{task_set}-{strategy}"
    folder.mkdir(parents=True)
    tasks = {}
    for task, table in predictions.items():
        if shuffle:
            table = table.sample(frac=1.0, random_state=1)
        table.to_csv(folder / f"predictions_{task}.csv", index=False)
        m = {"iou": float(table["iou"].mean())} if "dice" in table else {"accuracy": float(table["correct"].mean())}
        tasks[task] = {"metrics": m, "train_seconds": 10.0, "trainable_params": total_params}
    fold_seconds = fold_seconds if fold_seconds is not None else [{t: 5.0 for t in predictions}] * 2
    records = [{"fold": k, **({"seconds": s} if s is not None else {})} for k, s in enumerate(fold_seconds)]
    total = sum(sum(s.values()) for s in fold_seconds if s) if all(fold_seconds) else 10.0 * len(predictions)
    body = {"command": f"finetune --strategy {strategy} --tasks {task_set}", "seed": seed,
            "config": {"strategy": strategy, "tasks": task_set, "preset": "tiny", "data": "phantom",
                       "folds": len(records), "fold_records": records, **(config or {})},
            "tasks": tasks, "total_train_seconds": total + (source_seconds or 0.0), "total_params": total_params}
    if source_seconds is not None:
        body["source"] = {"role": "shared encoder", "train_seconds": source_seconds, "trainable_params": 0}
    (folder / "results.json").write_text(json.dumps(body))
    return folder


def flips(base, to_wrong, to_right):
    out = np.array(base, bool)
    out[list(to_wrong)] = False
    out[list(to_right)] = True
    return out


# cxr-hetero: independent right on images 0-69; the other arms differ on known discordant pairs
INDEPENDENT = np.arange(N) < 70
ARMS_CORRECT = {"independent": INDEPENDENT,
                "joint": flips(INDEPENDENT, range(0, 30), range(70, 73)),  # 30 / 3: independent far ahead
                "alternating": flips(INDEPENDENT, range(30, 33), range(73, 78)),  # 3 / 5: the best shared arm
                "baseline": flips(INDEPENDENT, range(33, 43), range(78, 80))}  # 10 / 2: raw p 0.039
DICE = np.random.default_rng(5).uniform(0.80, 0.95, N)
ARMS_DICE = {"independent": DICE, "joint": DICE - 0.1 + np.random.default_rng(6).normal(0, 0.01, N),
             "alternating": DICE + np.random.default_rng(7).normal(0, 0.01, N),
             "baseline": DICE + 0.03 + np.random.default_rng(8).normal(0, 0.01, N)}


def cxr_hetero(root, shuffle=(), **kw):
    return {s: make_run(root, "cxr-hetero", s, {"lung_seg": segmentation(ARMS_DICE[s]),
                                                "abnormal": classification(ARMS_CORRECT[s], seed=i)},
                        shuffle=s in shuffle, **kw)
            for i, s in enumerate(("independent", "alternating", "joint", "baseline"))}


def judged_by_id(root):
    return {j.claim.claim_id: j for j in claims.judge(reporting.collect([root]))}


def by_hand(folders, a, b, task):
    """The claim's p, diff and 95% CI straight from statsmodels / scipy / numpy on the two files'
    columns (the CI from the documented resamples, the same images for both arms)."""
    x = pd.read_csv(folders[a] / f"predictions_{task}.csv").set_index("id")
    y = pd.read_csv(folders[b] / f"predictions_{task}.csv").set_index("id").loc[x.index]
    if "dice" in x:
        p, va, vb = wilcoxon(x["dice"], y["dice"]).pvalue, x["iou"].to_numpy(), y["iou"].to_numpy()
    else:
        va, vb = x["correct"].to_numpy(bool), y["correct"].to_numpy(bool)
        table = [[np.sum(va & vb), np.sum(va & ~vb)], [np.sum(~va & vb), np.sum(~va & ~vb)]]
        p = mcnemar(table, exact=True).pvalue
    idx = metrics.resample_indices(len(x), 2000, seed=0)
    ci = np.percentile(va[idx].mean(axis=1) - vb[idx].mean(axis=1), [2.5, 97.5])
    return p, va.mean() - vb.mean(), tuple(ci)


def test_claims_json_has_one_object_per_registry_entry_and_not_run_for_missing_arms(tmp_path):
    make_run(tmp_path / "runs", "cxr-homo", "joint", {t: classification(INDEPENDENT, seed=i) for i, t in
                                                      enumerate(("bacterial_vs_normal", "viral_vs_normal"))})
    make_run(tmp_path / "runs", "cxr-homo", "independent",
             {t: classification(ARMS_CORRECT["joint"], seed=i) for i, t in
              enumerate(("bacterial_vs_normal", "viral_vs_normal"))})
    reporting.build([tmp_path / "runs"], tmp_path / "report")
    text = (tmp_path / "report" / "claims.json").read_text()
    assert "NaN" not in text
    out = json.loads(text)
    assert [o["claim_id"] for o in out] == [c.claim_id for c in claims.REGISTRY]
    assert all(list(o) == FIELDS for o in out)
    got = {o["claim_id"]: o for o in out}
    ran = got["ums-rep/cxr-homo/viral_vs_normal/joint-vs-independent"]
    assert ran["verdict"] == "agrees" and ran["p"] < 0.05 and len(ran["ci"]) == 2
    for cid in ("ums-rep/cxr-homo/viral_vs_normal/joint-vs-baseline",  # no baseline run
                "ums-rep/cxr-homo/bacterial_vs_viral/joint-vs-independent",  # no predictions for the task
                "ums-rep/echo-homo/mv_vs_ma/joint-vs-alternating", "ums-rep/cxr-homo/time-saving/joint-vs-baseline"):
        assert got[cid]["verdict"] == "not run" and got[cid]["p"] is None and got[cid]["diff"] is None, cid
    # the paper's exception: joint vs independent on bacterial vs normal is a "not significant" claim
    bvn = got["ums-rep/cxr-homo/bacterial_vs_normal/joint-vs-independent"]
    assert bvn["p_holm"] < 0.05 and bvn["verdict"] == "differs (significant)"


def test_verdicts_p_holm_and_diffs_equal_the_libraries_on_the_same_columns(tmp_path):
    folders = cxr_hetero(tmp_path)
    judged = judged_by_id(tmp_path)
    family = [j for j in judged.values() if j.claim.task_set == "cxr-hetero" and j.claim.kind == "comparison"]
    assert len(family) == 6
    expected_p, expected_diff, expected_ci = {}, {}, {}
    for j in family:
        cid = j.claim.claim_id
        expected_p[cid], expected_diff[cid], expected_ci[cid] = by_hand(folders, j.claim.a, j.claim.b, j.claim.task)
    holm = dict(zip(expected_p, multipletests(list(expected_p.values()), method="holm")[1]))
    for j in family:
        cid = j.claim.claim_id
        assert j.p == pytest.approx(expected_p[cid], rel=1e-9) and j.p_holm == pytest.approx(holm[cid], rel=1e-9)
        assert j.diff == pytest.approx(expected_diff[cid]) and j.ci == pytest.approx(expected_ci[cid])
        sig = holm[cid] < 0.05
        if j.claim.finding == "not significant":
            want = "differs (significant)" if sig else "agrees (n.s.)"
        else:
            want = ("agrees" if expected_diff[cid] > 0 else "reversed") if sig else "not significant"
        assert j.verdict == want, cid
    get = lambda task, b: judged[f"ums-rep/cxr-hetero/{task}/independent-vs-{b}"]  # noqa: E731
    assert [get("lung_seg", b).verdict for b in ("joint", "alternating", "baseline")] == \
        ["agrees", "agrees (n.s.)", "reversed"]
    assert [get("abnormal", b).verdict for b in ("joint", "alternating", "baseline")] == \
        ["agrees", "agrees (n.s.)", "not significant"]
    # Holm matters here: independent vs baseline on abnormal is p 0.039 raw, not significant corrected
    assert get("abnormal", "baseline").p < 0.05 < get("abnormal", "baseline").p_holm
    # the exact McNemar (33 discordant pairs), not the chi-square one
    assert get("abnormal", "joint").p == pytest.approx(mcnemar([[40, 30], [3, 7]], exact=True).pvalue)
    assert get("abnormal", "joint").p != pytest.approx(mcnemar([[40, 30], [3, 7]], exact=False).pvalue)
    # the arms are the registry's (independent vs baseline), not the best shared arm on the test set
    assert get("abnormal", "baseline").diff == pytest.approx((70 - 62) / N)
    # the bootstrap CI brackets the difference; the report carries the AUC difference too
    lo, hi = get("abnormal", "joint").ci
    assert lo < get("abnormal", "joint").diff < hi and math.isfinite(get("abnormal", "joint").extra["auc_diff"])


def test_shuffled_rows_give_the_same_p_diff_and_ci(tmp_path):
    cxr_hetero(tmp_path / "ordered")
    cxr_hetero(tmp_path / "shuffled", shuffle=("joint",))
    ordered, shuffled = judged_by_id(tmp_path / "ordered"), judged_by_id(tmp_path / "shuffled")
    for task in ("lung_seg", "abnormal"):
        a, b = (d[f"ums-rep/cxr-hetero/{task}/independent-vs-joint"] for d in (ordered, shuffled))
        assert (a.p, a.diff, a.ci, a.verdict) == (b.p, b.diff, b.ci, b.verdict)
    assert ordered["ums-rep/cxr-hetero/abnormal/independent-vs-joint"].p < 1e-5


def test_segmentation_is_judged_by_wilcoxon_even_with_an_old_correct_column(tmp_path):
    tables = {s: segmentation(ARMS_DICE[s]).assign(correct=True) for s in ("independent", "joint")}
    for s, t in tables.items():
        make_run(tmp_path, "echo-hetero", s, {"envelope_seg": t})
    j = judged_by_id(tmp_path)["ums-rep/echo-hetero/envelope_seg/independent-vs-joint"]
    assert j.test.startswith("Wilcoxon")
    assert j.p == pytest.approx(wilcoxon(ARMS_DICE["independent"], ARMS_DICE["joint"]).pvalue)
    assert j.verdict == "agrees"


@pytest.mark.parametrize("problem", ["partly different ids", "no shared id", "seed", "encoder_sha1", "folds_sha1"])
def test_incomparable_runs_are_refused_in_one_line_naming_both(tmp_path, problem):
    other, kw = classification(ARMS_CORRECT["joint"]), {}
    if problem == "partly different ids":
        other.loc[:4, "id"] = [f"other{i}" for i in range(5)]
    elif problem == "no shared id":
        other["id"] = [f"x{i}" for i in range(N)]
    elif problem == "seed":
        kw = {"seed": 1}
    else:
        kw = {"config": {problem: "b" * 40}}
    a = make_run(tmp_path, "echo-homo", "joint", {"mv_vs_ma": classification(INDEPENDENT, classes=("MV", "MA"))},
                 config={"encoder_sha1": "a" * 40, "folds_sha1": "a" * 40} if problem.endswith("sha1") else None)
    b = make_run(tmp_path, "echo-homo", "independent", {"mv_vs_ma": other}, **kw)
    for fn in (lambda: claims.judge(reporting.collect([tmp_path])), lambda: reporting.build([tmp_path], tmp_path / "r"),
               lambda: reporting.compare_strategies([a, b])):
        with pytest.raises(ValueError) as e:
            fn()
        msg = str(e.value)
        assert "\n" not in msg and f"{a} and {b}" in msg, msg
        assert ("test images" if "id" in problem else problem) in msg


def test_a_key_recorded_by_one_run_only_is_not_refused(tmp_path):
    make_run(tmp_path, "echo-homo", "joint", {"mv_vs_ma": classification(INDEPENDENT)},
             config={"encoder_sha1": "a" * 40})
    make_run(tmp_path, "echo-homo", "independent", {"mv_vs_ma": classification(ARMS_CORRECT["joint"])})
    assert judged_by_id(tmp_path)["ums-rep/echo-homo/mv_vs_ma/joint-vs-independent"].verdict == "agrees"


@pytest.mark.parametrize("fold_ratios,verdict", [((0.5, 0.6, 0.7), "agrees"), ((0.5, 0.6, 1.2), "inconclusive"),
                                                 ((1.1, 1.3, 1.2), "reversed")])
def test_a_time_saving_is_judged_on_every_folds_ratio(tmp_path, fold_ratios, verdict):
    tasks = ("mv_vs_ma", "mv_vs_tr", "ma_vs_tr")
    preds = {t: classification(INDEPENDENT) for t in tasks}
    base = [{t: 100.0 for t in tasks} for _ in fold_ratios]
    # joint: per fold (source 30 s + fine-tuning) / (baseline's 300 s) = the fold's ratio
    joint = [{t: (r * 300 - 30) / 3 for t in tasks} for r in fold_ratios]
    make_run(tmp_path, "echo-homo", "joint", preds, fold_seconds=joint, source_seconds=30.0, total_params=400)
    make_run(tmp_path, "echo-homo", "baseline", preds, fold_seconds=base, total_params=1000)
    judged = judged_by_id(tmp_path)
    time = judged["ums-rep/echo-homo/time-saving/joint-vs-baseline"]
    assert time.extra["ratios"] == pytest.approx(list(fold_ratios))
    assert time.ci == pytest.approx((min(fold_ratios), max(fold_ratios)))
    assert time.verdict == verdict
    # the ratio of the folds' mean seconds is below 1 in every case but the last: judging it alone would
    # say "agrees" where one fold costs more
    assert time.diff == pytest.approx(np.mean(fold_ratios)) and (time.diff < 1) == (verdict != "reversed")
    params = judged["ums-rep/echo-homo/parameters-saving/joint-vs-baseline"]
    assert params.diff == pytest.approx(0.4) and params.verdict == "agrees" and params.ci is None


def test_runs_without_per_fold_seconds_are_judged_on_their_totals_and_say_so(tmp_path):
    preds = {"mv_vs_ma": classification(INDEPENDENT)}
    make_run(tmp_path, "echo-homo", "joint", preds, fold_seconds=[None, None])
    make_run(tmp_path, "echo-homo", "baseline", preds, fold_seconds=[None, None])
    time = judged_by_id(tmp_path)["ums-rep/echo-homo/time-saving/joint-vs-baseline"]
    assert "totals" in time.test and "totals" in time.note and time.ci is None
    assert time.diff == pytest.approx(1.0) and time.verdict == "inconclusive"


def test_cxr_homo_paper_ratio_is_recomputed_under_the_package_cost_rule(tmp_path):
    by = {(c.task_set, c.what): c for c in claims.REGISTRY if c.kind == "saving"}
    time, params = by["cxr-homo", "time"], by["cxr-homo", "parameters"]
    assert time.paper_ratio == pytest.approx(4.81 / 34.15) and params.paper_ratio == pytest.approx(887_145 / 4_720_518)
    assert time.paper_ratio_package_rule == pytest.approx((302.20 + 4.81) / (302.20 + 34.15))
    assert round(time.paper_ratio_package_rule, 2) == 0.91 and round(params.paper_ratio_package_rule, 2) == 0.31
    assert by["cxr-hetero", "time"].paper_ratio_package_rule == by["cxr-hetero", "time"].paper_ratio
    assert {c.a for (s, _), c in by.items() if s.endswith("homo")} == {"joint"}
    assert {c.a for (s, _), c in by.items() if s.endswith("hetero")} == {"independent"}
    tasks = ("bacterial_vs_normal", "viral_vs_normal", "bacterial_vs_viral")
    for s in ("joint", "baseline"):
        make_run(tmp_path / "runs", "cxr-homo", s, {t: classification(INDEPENDENT) for t in tasks})
    md = reporting.build([tmp_path / "runs"], tmp_path / "report")
    row = next(r for r in rows_of(md) if r[:2] == ["a shared representation saves training time", "cxr-homo joint"])
    assert "ratio 0.14 as printed, 0.91 under the package's cost rule" in row[2]
    assert "0.14 / 0.19 (package rule: 0.91 / 0.31)" in md  # Table 6
    got = {o["claim_id"]: o for o in json.loads((tmp_path / "report" / "claims.json").read_text())}
    assert got["ums-rep/cxr-homo/parameters-saving/joint-vs-baseline"]["paper_finding"].endswith(
        "ratio 0.19 as printed, 0.31 under the package's cost rule")


def test_report_opens_with_the_claims_and_its_html_colours_verdicts_and_links_tables(tmp_path):
    cxr_hetero(tmp_path / "runs")
    md = reporting.build([tmp_path / "runs"], tmp_path / "report")
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Claims at a glance", "## UMS-Rep"]
    rows = rows_of(md)
    claim_rows = [r for r in rows if r[1].startswith("cxr-hetero ")]
    assert len(claim_rows) == 8  # 6 comparisons and 2 savings
    assert ["independent better than joint", "cxr-hetero lung_seg"] == claim_rows[0][:2]
    assert claim_rows[0][-2:] == ["agrees", "[Table 3](#ums-rep-table-3)"]
    assert "Not run (no finetune run of the set): cxr-homo (14 claims)" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert re.search(r'<td[^>]*class="verdict v-agrees"[^>]*>agrees</td>', html)
    assert re.search(r'<td[^>]*class="verdict v-reversed"[^>]*>reversed</td>', html)
    assert re.search(r'<td[^>]*class="verdict v-ns"[^>]*>not significant</td>', html)
    assert ".v-agrees{background:#d4edda" in html
    for table in ("3", "4"):
        assert f'href="#ums-rep-table-{table}"' in html and f'id="ums-rep-table-{table}"' in html
    assert html.index("Claims at a glance") < html.index('id="ums-rep-table-3"')


def test_compare_writes_the_same_claims(tmp_path):
    folders = cxr_hetero(tmp_path / "runs")
    text = reporting.compare_strategies(list(folders.values()), tmp_path / "cmp")
    assert text.startswith("## Claims at a glance")
    got = json.loads((tmp_path / "cmp" / "claims.json").read_text())
    assert got == [j.as_json() for j in claims.judge(reporting.collect(list(folders.values()), recursive=False))]
    pair = next(r for r in rows_of(text) if r[:2] == ["lung_seg", "independent vs joint"])
    assert pair[2] == "Wilcoxon"


def test_auc_resampled_equals_metrics_auc_on_each_resample():
    rng = np.random.default_rng(0)
    for n_classes in (2, 3):
        y = np.arange(60) % n_classes
        p = rng.dirichlet(np.ones(n_classes), 60).round(1)  # rounded: ties
        p /= p.sum(axis=1, keepdims=True)
        assert metrics.auc_resampled(y, p, np.ones((1, 60)))[0] == pytest.approx(metrics.auc(y, p)["auc"])
        idx = metrics.resample_indices(60, 20, seed=3)
        w = metrics.resample_weights(idx, 60)
        assert (w.sum(axis=1) == 60).all()
        got = metrics.auc_resampled(y, p, w)
        for k in range(20):
            if len(np.unique(y[idx[k]])) == n_classes:
                assert got[k] == pytest.approx(metrics.auc(y[idx[k]], p[idx[k]])["auc"]), (n_classes, k)


def test_bootstrap_ci_is_the_percentile_interval_of_paired_resamples():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    point, (lo, hi) = metrics.bootstrap_ci(lambda w: metrics.weighted_mean(a, w) - metrics.weighted_mean(b, w), 50)
    idx = metrics.resample_indices(50)
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)  # the same images for both arms
    assert point == pytest.approx(a.mean() - b.mean())
    assert (lo, hi) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))


def test_an_arm_that_did_not_learn_is_not_judged(tmp_path):
    """A head that did not beat its majority class on a validation fold makes its pair no fair
    comparison: verdict 'not learned', kept out of the Holm family of the set's other claims."""
    folders = cxr_hetero(tmp_path)
    learned = json.loads((folders["baseline"] / "results.json").read_text())
    learned["tasks"]["abnormal"]["learned_on_validation"] = [True, False]
    learned["tasks"]["lung_seg"]["learned_on_validation"] = [True, True]
    (folders["baseline"] / "results.json").write_text(json.dumps(learned))
    judged = judged_by_id(tmp_path)
    j = judged["ums-rep/cxr-hetero/abnormal/independent-vs-baseline"]
    assert j.verdict == "not learned" and "baseline did not learn abnormal" in j.note and math.isnan(j.p_holm)
    assert judged["ums-rep/cxr-hetero/lung_seg/independent-vs-baseline"].verdict == "reversed"  # learned: judged
    family = [j for j in judged.values() if j.claim.task_set == "cxr-hetero" and j.claim.kind == "comparison"
              and j.verdict != "not learned"]
    assert [j.p_holm for j in family] == pytest.approx(list(multipletests([j.p for j in family], method="holm")[1]))
