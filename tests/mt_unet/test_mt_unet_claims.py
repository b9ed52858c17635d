"""MT-UNet's claims (Sections 5.1-5.2, Tables 1-3) in the claims registry, judged by the paired
bootstrap over test images pooled across seeds: synthetic run folders (results.json and each
seed's predictions_test.csv), no training."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from data_prep.egd import CLASSES
from mt_unet import claims as mt_claims
from mt_unet.naming import label
from ums_rep import claims, plugins, reporting

N = 60
SEEDS = (0, 1, 2, 3, 4)
IDS = [f"img{i:03d}" for i in range(N)]


def seed_table(seed: int, kld_shift=0.0, accuracy=0.7, classify=True, saliency=True) -> pd.DataFrame:
    """One seed's per-image test predictions: KLD around 0.5 + ``kld_shift`` (CC, HS follow it),
    a fraction ``accuracy`` of the images right with confident probabilities."""
    rng = np.random.default_rng(100 + seed)
    table = pd.DataFrame({"id": IDS, "truth": [CLASSES[i % 3] for i in range(N)]})
    if saliency:
        kld = 0.5 + kld_shift + rng.normal(0, 0.05, N)
        table["kld"], table["cc"], table["hs"] = kld, 1.2 - kld, 1.1 - kld
    if classify:
        truth = np.arange(N) % 3
        right = rng.random(N) < accuracy
        pred = np.where(right, truth, (truth + 1) % 3)
        p = rng.uniform(0, 0.2, (N, 3))
        p[np.arange(N), pred] += 1.0
        p /= p.sum(axis=1, keepdims=True)
        table["pred"] = [CLASSES[i] for i in pred]
        table["correct"] = right
        for i, c in enumerate(CLASSES):
            table[f"p_{c}"] = p[:, i]
    return table


def make_run(root, name: str, *, seeds=SEEDS, shuffle=False, data_seed=0, preset="quick", unlearned=(),
             **table_kwargs):
    """A finished mt_unet.train run folder of the model labelled ``name``; the tasks in
    ``unlearned`` did not beat chance on the validation split in its first seed."""
    folder = root / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "").replace("'", "")
    per_seed = []
    for s in seeds:
        t = seed_table(s, **table_kwargs)
        if shuffle:
            t = t.sample(frac=1.0, random_state=s)
        (folder / f"seed{s}").mkdir(parents=True)
        t.to_csv(folder / f"seed{s}" / "predictions_test.csv", index=False)
        m = {k: float(np.median(t[k])) for k in ("kld", "cc", "hs") if k in t}
        if "correct" in t:
            m["accuracy"] = float(t["correct"].mean())
        flags = {task: not (s == seeds[0] and task in unlearned) for task, key in (("saliency", "kld"),
                                                                                   ("disease", "correct")) if key in t}
        per_seed.append({"seed": s, "metrics": m, "learned_on_validation": flags})
    metrics = {k: float(np.median([r["metrics"][k] for r in per_seed])) for k in per_seed[0]["metrics"]}
    body = {"command": "mt_unet.train --model x", "seed": data_seed,
            "config": {"preset": preset, "seeds": len(seeds), "data": "phantom", "image": [96, 64]},
            "tasks": {name: {"label": name, "metrics": metrics, "std": {k: 0.01 for k in metrics},
                             "per_seed": per_seed, "train_seconds": 30.0, "trainable_params": 1000}},
            "total_train_seconds": 30.0, "total_params": 1000, "versions": {}}
    (folder / "results.json").write_text(json.dumps(body))
    return folder


def mt_judged(root):
    return {j.claim.claim_id: j for j in claims.judge(reporting.collect([root])) if j.claim.paper == "MT-UNet"}


def test_the_registry_holds_every_statement_of_tables_1_to_3_in_the_tables_direction():
    plugins.load()
    mt = [c for c in claims.REGISTRY if c.paper == "MT-UNet"]
    assert len(mt) == len({c.claim_id for c in mt}) == 4 * 2 + 4 * 3 + 4 * 5
    pairs = {(c.table, frozenset((c.a, c.b))) for c in mt}
    mtl3 = label("mtunet")
    for other in ("UNetC", "EfficientNetV2-S", "InceptionResNetV2", "ResNet50"):
        assert ("1", frozenset((mtl3, other))) in pairs
    for other in ("UNetS", "SimpleNet", "MSINet", "VGGSSM"):
        assert ("2", frozenset((mtl3, other))) in pairs
    for other in ("MT-UNet (MTL1)", "MT-UNet (MTL2)", "MT-UNetB (MTL3)", "MT-UNetT (MTL3)"):
        assert ("3", frozenset((mtl3, other))) in pairs
    by_id = {c.claim_id: c for c in mt}
    # the table goes against the text once (MT-UNetT's AUC 0.847 > 0.843): the claim follows the table
    t_auc = by_id["mt-unet/table-3/auc/mt-unett-mtl3-vs-mt-unet-mtl3"]
    assert (t_auc.a, t_auc.finding) == ("MT-UNetT (MTL3)", "direction") and "0.847 vs 0.843" in t_auc.paper_statement
    # equal medians (HS 0.548): a claim of no difference
    assert by_id["mt-unet/table-3/hs/mt-unet-mtl3-vs-mt-unetb-mtl3"].finding == "not significant"
    kld = by_id["mt-unet/table-2/kld/mt-unet-mtl3-vs-unets"]
    assert kld.lower_is_better and kld.task_set == "Table 2" and kld.section == "Section 5.1, Table 2"
    assert all(c.task_set == f"Table {c.table}" for c in mt)  # Holm families: one per table


def test_bootstrap_finds_a_real_difference_and_none_where_there_is_none(tmp_path):
    a = make_run(tmp_path, "A", kld_shift=-0.05, accuracy=0.9)
    b = make_run(tmp_path, "B", kld_shift=0.0, accuracy=0.4)
    same = make_run(tmp_path, "B2", kld_shift=0.0, accuracy=0.4)
    ra, rb, rs = ((f, json.loads((f / "results.json").read_text())) for f in (a, b, same))
    kld = mt_claims.seeds_bootstrap_test(ra, rb, "kld")
    assert kld["p"] < 0.01 and kld["ci"][1] < 0 and kld["seeds"] == list(SEEDS) and kld["n"] == N
    # diff: mean over seeds of the per-seed medians, a − b
    tabs = {s: (seed_table(s, kld_shift=-0.05, accuracy=0.9), seed_table(s, accuracy=0.4)) for s in SEEDS}
    assert kld["diff"] == pytest.approx(np.mean([np.median(x["kld"]) - np.median(y["kld"]) for x, y in tabs.values()]))
    acc = mt_claims.seeds_bootstrap_test(ra, rb, "accuracy")
    assert acc["p"] < 0.01 and acc["diff"] == pytest.approx(np.mean([x["correct"].mean() - y["correct"].mean()
                                                                     for x, y in tabs.values()]))
    auc = mt_claims.seeds_bootstrap_test(ra, rb, "auc")
    assert auc["p"] < 0.01 and auc["diff"] > 0.1
    none = mt_claims.seeds_bootstrap_test(rb, rs, "kld")  # identical predictions
    assert none["diff"] == 0 and none["p"] == 1.0


def test_bootstrap_pairs_images_by_id_not_by_row(tmp_path):
    a = make_run(tmp_path, "A", kld_shift=-0.02)
    b = make_run(tmp_path, "B")
    b_shuffled = make_run(tmp_path / "s", "B", shuffle=True)
    ra = (a, json.loads((a / "results.json").read_text()))
    straight = mt_claims.seeds_bootstrap_test(ra, (b, json.loads((b / "results.json").read_text())), "kld")
    shuffled = mt_claims.seeds_bootstrap_test(ra, (b_shuffled, json.loads((b_shuffled / "results.json").read_text())),
                                              "kld")
    assert straight["p"] == shuffled["p"] and straight["ci"] == shuffled["ci"]


@pytest.mark.parametrize("change, message", [({"seeds": (0, 1, 2)}, "seeds"), ({"data_seed": 7}, "data seed"),
                                             ({"preset": "tiny"}, "preset")])
def test_runs_that_are_not_comparable_are_refused_in_one_line(tmp_path, change, message):
    a = make_run(tmp_path, "A")
    b = make_run(tmp_path, "B", **change)
    with pytest.raises(ValueError, match=message) as err:
        mt_claims.seeds_bootstrap_test(*((f, json.loads((f / "results.json").read_text())) for f in (a, b)), "kld")
    assert "\n" not in str(err.value) and str(a) in str(err.value) and str(b) in str(err.value)


def test_judge_gives_verdicts_holm_per_table_and_not_run_for_missing_models(tmp_path):
    mtl3 = label("mtunet")
    make_run(tmp_path, mtl3, kld_shift=-0.05, accuracy=0.85)
    make_run(tmp_path, "UNetC", saliency=False, accuracy=0.4)  # Table 1: MT-UNet clearly ahead
    make_run(tmp_path, "ResNet50", saliency=False, accuracy=0.95)  # Table 1: reversed
    make_run(tmp_path, "UNetS", classify=False, kld_shift=-0.05)  # Table 2: the same saliency
    make_run(tmp_path, "MT-UNet (MTL1)", kld_shift=-0.05, accuracy=0.85)
    make_run(tmp_path, "MT-UNet (MTL3, authors' loss)", kld_shift=0.5)  # never stands in for the paper's model
    judged = mt_judged(tmp_path)
    assert judged["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-unetc"].verdict == "agrees"
    assert judged["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-resnet50"].verdict == "reversed"
    assert judged["mt-unet/table-2/kld/mt-unet-mtl3-vs-unets"].verdict == "not significant"
    assert judged["mt-unet/table-1/auc/mt-unet-mtl3-vs-efficientnetv2-s"].verdict == "not run"
    assert "no EfficientNetV2-S run" in judged["mt-unet/table-1/auc/mt-unet-mtl3-vs-efficientnetv2-s"].note
    # KLD is lower-is-better: a lower KLD of MT-UNet than a worse model's agrees
    make_run(tmp_path, "SimpleNet", classify=False, kld_shift=0.1)
    judged = mt_judged(tmp_path)
    assert judged["mt-unet/table-2/kld/mt-unet-mtl3-vs-simplenet"].verdict == "agrees"
    assert judged["mt-unet/table-2/cc/mt-unet-mtl3-vs-simplenet"].verdict == "agrees"
    # Holm within each table, never across tables
    for table in ("Table 1", "Table 2", "Table 3"):
        family = [j for j in judged.values() if j.claim.task_set == table and math.isfinite(j.p)]
        assert family
        expected = multipletests([j.p for j in family], method="holm")[1]
        assert [j.p_holm for j in family] == pytest.approx(list(expected))
    # claims.json and the report's claims at a glance
    md = reporting.build([tmp_path], tmp_path / "report")
    rows = {r["claim_id"]: r for r in json.loads((tmp_path / "report" / "claims.json").read_text())}
    assert rows["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-unetc"]["verdict"] == "agrees"
    assert rows["mt-unet/table-1/auc/mt-unet-mtl3-vs-efficientnetv2-s"]["verdict"] == "not run"
    assert "### MT-UNet" in md and mt_claims.METHOD in md and "(#mt-unet-table-1)" in md
    assert '<a id="mt-unet-table-1"></a>' in md


def test_two_runs_of_one_model_are_not_guessed_between(tmp_path):
    make_run(tmp_path / "one", label("mtunet"))
    make_run(tmp_path / "two", label("mtunet"))
    make_run(tmp_path, "UNetC", saliency=False)
    j = mt_judged(tmp_path)["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-unetc"]
    assert j.verdict == "not run" and "2 MT-UNet (MTL3) runs" in j.note


def test_a_model_that_did_not_learn_is_shown_but_not_judged(tmp_path):
    """Every arm learns before it is compared: a classifier whose disease head stayed at chance on the
    validation split in one seed gives "not learned" (its test still shown) and leaves the Holm
    family; its saliency claims, a task it learned, are judged."""
    make_run(tmp_path, label("mtunet"), kld_shift=-0.05, accuracy=0.85)
    make_run(tmp_path, "ResNet50", saliency=False, accuracy=0.3, unlearned=("disease",))
    make_run(tmp_path, "UNetC", saliency=False, accuracy=0.4)
    make_run(tmp_path, "MT-UNetT (MTL3)", kld_shift=0.1, accuracy=0.85, unlearned=("disease",))
    judged = mt_judged(tmp_path)
    resnet = judged["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-resnet50"]
    assert resnet.verdict == "not learned" and resnet.p < 0.01 and "ResNet50" in resnet.note
    assert not math.isfinite(resnet.p_holm)
    assert judged["mt-unet/table-1/accuracy/mt-unet-mtl3-vs-unetc"].verdict == "agrees"
    family = [j for j in judged.values() if j.claim.task_set == "Table 1" and math.isfinite(j.p_holm)]
    assert [j.claim.b for j in family] == ["UNetC", "UNetC"]  # the Holm family holds the judged claims only
    assert judged["mt-unet/table-3/kld/mt-unet-mtl3-vs-mt-unett-mtl3"].verdict == "agrees"  # saliency learned
    assert judged["mt-unet/table-3/accuracy/mt-unet-mtl3-vs-mt-unett-mtl3"].verdict == "not learned"

