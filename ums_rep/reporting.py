"""The reproduction report (``python -m ums_rep.report``, :mod:`ums_rep.report`, is its command):
every reproduced table beside the paper's numbers, with the figures, in Markdown (``report.md``)
and one self-contained HTML page (``report.html``, images inlined).

The report opens with the claims at a glance: every claim of :data:`ums_rep.claims.REGISTRY`
judged on the runs (UMS-Rep Sections 4.1.2 and 4.2.2; tests, verdicts and the one cost rule are
:mod:`ums_rep.claims`; another paper's claims as its package registered them), each row linked
to its table; ``claims.json`` holds the same, one object per claim. It reads every
``results.json`` under the given folders and recognises each by its ``command``: CDAE
pretraining → UMS-Rep Table 2; ``finetune`` runs → Tables 3/5/7/9 (metrics) and 4/6/8/10 (time,
parameters), per task set; ``scan`` runs → the Talos choice against the paper's; a
``benchmarks.run`` JSON (``--bench``) → the compute-saving table; another paper's runs → the
section its package registered (:func:`register_kind`, :func:`register_section`, loaded
through :mod:`ums_rep.plugins`). Anything else (a kind registered as not reported, an
unfinished run) is skipped with a logged reason, and runs of different presets are refused
unless ``--mix-presets``. The header states the data (phantom or real), presets, seeds,
versions and hardware the runs recorded. :data:`ums_rep.paper_results.PAPER` is the one home of
UMS-Rep's numbers (another paper's are its package's).
A ``times.json`` in a ``--runs`` folder (``reproduce.sh``'s time table, :mod:`ums_rep.reproduce_plan`)
becomes the section "How long each part took".
"""
from __future__ import annotations

import base64
import json
import math
import logging
import os
import re
from pathlib import Path

import pandas as pd

from data_prep.io import atomic_write_text
from ums_rep import claims as paper_claims, metrics, plugins, reproduce_plan
from ums_rep.paper_results import PAPER

log = logging.getLogger("ums_rep.report")  # the command's name: its log lines read as before

SET_TABLES = {"cxr-hetero": ("3", "4"), "cxr-homo": ("5", "6"), "echo-hetero": ("7", "8"), "echo-homo": ("9", "10")}
STRATEGY_ORDER = ("independent", "alternating", "joint", "baseline")
FIGURES = ("denoising.png", "gradcam_*.png", "training_curves.png", "saliency_overlays.png", "analyze_*.png")


def _num(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


KINDS = {
    # results.json's command (its first word) → the keys that kind of results.json must hold
    "pretrain": ("config", "tasks"),
    "finetune": ("config", "tasks", "total_train_seconds", "total_params"),
    "scan": ("config", "best", "rounds", "scan_seconds"),
}
REPORTED = ["pretrain", "finetune", "scan"]  # the kinds the report reads (register_kind adds to both)
SECTIONS: list = []  # (heading, runs → Markdown lines): another paper's part of the report (register_section)


def register_kind(command: str, keys: tuple, reported: bool = True) -> None:
    """Let :func:`collect` recognise another package's results.json by its ``command``.

    Args:
        command: The command's name, the first word of its results.json ``command``.
        keys: The keys such a results.json must hold.
        reported: Whether the report reads it (False: it is recognised, and skipped by name)."""
    KINDS[command] = tuple(keys)
    if reported and command not in REPORTED:
        REPORTED.append(command)


def register_section(heading: str, tables) -> None:
    """Add a part to the report, after UMS-Rep's and before the figures (:func:`build`).

    Args:
        heading: Its ``##`` heading (the paper's name), written even when no run of it is found.
        tables: ``runs → list of Markdown lines`` (``runs`` as :func:`collect` returns them)."""
    if all(h != heading for h, _ in SECTIONS):
        SECTIONS.append((heading, tables))


def _classify(f: Path, kinds) -> tuple[str | None, dict | str]:
    """``(kind, body)`` of results.json ``f`` if its kind is one of ``kinds``, else ``(None, why)``."""
    try:
        body = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"results.json is not readable JSON ({e})"
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        return None, "results.json names no command"
    kind = body["command"].split()[0]
    if kind not in KINDS:
        return None, f"results.json of an unknown command {body['command']!r}"
    if kind not in kinds:
        return None, f"a {kind} run, not {' or '.join(kinds)}"
    missing = [k for k in KINDS[kind] if k not in body]
    if missing:
        return None, f"its {kind} results.json lacks {missing}"
    return kind, body


def collect(run_dirs, kinds=None, *, recursive: bool = True, mix_presets: bool = False,
            preset: str | None = None) -> list:
    """``(folder, results)`` of the runs of ``kinds`` (see :data:`KINDS`; default
    :data:`REPORTED`, once :func:`ums_rep.plugins.load` has registered every package's) among ``run_dirs``:
    every results.json under each (nested encoders included) if ``recursive``, else each
    folder's own; with ``preset``, only the runs of that preset. Anything else is skipped with
    one logged line saying why; runs of different presets raise ``ValueError`` unless
    ``mix_presets``, and so does finding no run at all.
    The one home of reading run folders: ``report`` and the training commands' ``--compare`` all use it."""
    plugins.load()
    kinds = tuple(REPORTED) if kinds is None else kinds
    found = []
    for d in map(Path, run_dirs):
        if not d.exists():
            raise FileNotFoundError(f"{d}: no such run folder")
        files = sorted(d.rglob("results.json")) if recursive and d.is_dir() else [d / "results.json"]
        files = [f for f in files if f.is_file()]
        if not files:
            log.warning("skipped %s: no results.json (not a run folder, or an unfinished run)", d)
        for f in files:
            kind, body = _classify(f, kinds)
            if kind is None:
                log.warning("skipped %s: %s", f.parent, body)
            elif preset is not None and body["config"].get("preset") != preset:
                log.info("skipped %s: preset %s, not %s", f.parent, body["config"].get("preset"), preset)
            else:
                found.append((f.parent, body))
    if not found:
        raise ValueError(f"no {' or '.join(kinds)} run{f' of preset {preset}' if preset else ''} among "
                         f"{[str(d) for d in run_dirs]}")
    presets = {}
    for folder, body in found:
        presets.setdefault(str(body["config"].get("preset")), folder)
    if len(presets) > 1 and not mix_presets:
        raise ValueError("runs of different presets in one table (" + ", ".join(f"{p}: {f}" for p, f in presets.items())
                         + "); give runs of one preset, or --mix-presets")
    return found


def table2(runs) -> list:
    lines = []
    for folder, r in runs:
        if not r["command"].startswith("pretrain --backbone cdae") or "table2" not in r:
            continue
        c = r["config"]
        lines += [f"### UMS-Rep Table 2: CDAE denoising ({folder.name}; {c.get('data')}, preset {c.get('preset')}, "
                  f"{c.get('image')} px, {c.get('n_test')} test images)", ""]
        rows = []
        for level, row in r["table2"].items():
            cells = [f"{row[k]['psnr']:.2f} / {row[k]['ssim']:.2f} / {row[k]['ms_ssim']:.2f}"
                     for k in ("noisy", "cdae", "nlm", "wavelet")]
            paper = PAPER["table2"].get(level)
            rows.append([level, *cells, f"{paper[0]:.2f} / {paper[1]:.2f} / {paper[2]:.2f}"])
        lines += markdown_table(["noise", "noisy", "CDAE", "NLM", "wavelet", "paper CDAE"], rows)
        lines += ["", "Cells: PSNR (dB) / SSIM / MS-SSIM on the test split.", ""]
    return lines


COST_ENTRIES = ("denoiser",)  # task entries of older results.json that are source models, not target tasks


def _finetune_sets(runs) -> dict:
    by_set = {}
    for folder, r in runs:
        if r["command"].startswith("finetune"):
            by_set.setdefault(r["config"]["tasks"], []).append((folder, r))
    for entries in by_set.values():
        entries.sort(key=lambda e: STRATEGY_ORDER.index(e[1]["config"]["strategy"]))
    return by_set


def _primary(metrics_: dict) -> str:
    return "iou" if "iou" in metrics_ else "accuracy"


def _target_tasks(r) -> list:
    return [t for t in r["tasks"] if t not in COST_ENTRIES]


def pairwise_tests(entries) -> list:
    """The paired test of every pair of strategies on every task (:func:`ums_rep.claims.paired_test`:
    exact McNemar on per-image correctness for classification, Wilcoxon signed-rank on per-image
    Dice for segmentation; images paired by id, runs checked for the same seed, folds, encoder and
    test images): ``{task, a, b, test, diff (a − b), metric, p, n, discordant}``, p uncorrected."""
    out = []
    for task in _target_tasks(entries[0][1]):
        for i in range(len(entries)):
            for j in range(i + 1, len(entries)):
                (da, ra), (db, rb) = entries[i], entries[j]
                files = [Path(d) / f"predictions_{task}.csv" for d in (da, db)]
                if task not in rb["tasks"] or not all(f.is_file() for f in files):
                    continue
                t = paper_claims.paired_test(entries[i], entries[j], task, bootstrap=False)
                out.append({"task": task, "a": ra["config"]["strategy"], "b": rb["config"]["strategy"], **t})
    return out


def _cost(r) -> tuple[float, int, str]:
    """Total seconds and parameters as Tables 4, 6, 8, 10 count them, and what is counted."""
    s = r["config"]["strategy"]
    has_source = bool(r.get("source")) or "denoiser" in r["tasks"]
    counted = ("separate models + their denoiser" if has_source else "separate models") \
        if s == "baseline" else ("source model + heads" if has_source else "heads only")
    return r["total_train_seconds"], r["total_params"], counted


def table_anchor(paper: str, table: str) -> str:
    """The HTML anchor id of a paper's table in the report (``ums-rep-table-3``), which the claims
    at a glance link to."""
    return f"{paper.lower()}-table-{table}".replace(" ", "-")


def _paper_ratios(set_name: str) -> str:
    """The paper's time / parameter ratios of Tables 4, 6, 8, 10 and, where a table leaves the
    source model out (Table 6), the same recomputed under the package's cost rule."""
    by_what = {c.what: c for c in paper_claims.REGISTRY if c.kind == "saving" and c.task_set == set_name}
    if set(by_what) != {"time", "parameters"}:
        return ""
    t, p = by_what["time"], by_what["parameters"]
    text = f"{t.paper_ratio:.2f} / {p.paper_ratio:.2f}"
    if (t.paper_ratio, p.paper_ratio) != (t.paper_ratio_package_rule, p.paper_ratio_package_rule):
        text += f" (package rule: {t.paper_ratio_package_rule:.2f} / {p.paper_ratio_package_rule:.2f})"
    return text


def strategy_tables(runs) -> list:
    """Tables 3/5/7/9 (test metrics of the fold ensemble, per-fold mean ± std, the paper's), the
    paired test of every strategy pair (:func:`pairwise_tests`), and Tables 4/6/8/10 (time and
    parameters under :data:`ums_rep.claims.COST_RULE`), with our ratio to the baseline beside the
    paper's."""
    lines = []
    for set_name, entries in sorted(_finetune_sets(runs).items()):
        perf, cost = SET_TABLES.get(set_name, ("?", "?"))
        c = entries[0][1]["config"]
        preset = ", ".join(sorted({str(r["config"].get("preset")) for _, r in entries}))
        anchor = f"<a id=\"{table_anchor('UMS-Rep', perf)}\"></a>"
        lines += [f"### {anchor}UMS-Rep Table {perf}: {set_name} ({c.get('data')}, preset {preset}, "
                  f"{c.get('folds')} fold(s) of {c.get('fold_partition', c.get('folds'))}, "
                  f"seed {entries[0][1].get('seed')})", ""]
        rows = []
        for folder, r in entries:
            s = r["config"]["strategy"]
            for task in _target_tasks(r):
                t = r["tasks"][task]
                m = t["metrics"]
                key = _primary(m)
                spread = (f"{key} {t['fold_mean'][key]:.3f} ± {t['fold_std'][key]:.3f}"
                          if key in t.get("fold_mean", {}) else "")
                p = PAPER["tasks"].get((s, task))
                paper = " / ".join(_num(v, 2) for v in (p[0], p[1], p[3])) if p else ""
                flags = t.get("learned_on_validation")
                learned = f"{sum(flags)}/{len(flags)}" if flags else "–"
                rows.append([s, task, *(_num(m.get(k)) for k in ("accuracy", "f_score", "mcc", "auc", "iou", "iou_mean")),
                             _num(p[2], 2) if p else "", paper, spread, learned])
        lines += markdown_table(["strategy", "task", "accuracy", "F-score", "MCC", "AUC", "IoU (foreground)",
                                 "IoU (mean of both classes)", "paper IoU", "paper acc / F / MCC", "fold mean ± std",
                                 "learned (validation folds)"], rows)
        lines += ["", f"Test metrics: {c.get('test_score', 'the fold models’ mean probability')}. The paper's IoU "
                      "(above its F-score, which a foreground IoU cannot be) stands beside the mean over both classes. "
                      "Learned: the validation folds on which the head beat its majority class (segmentation: IoU ≥ "
                      "0.5); an arm that did not learn is not a fair comparison.", "",
                  f"Paired tests, {set_name} (every pair of strategies, images paired by id; classification: exact "
                  "McNemar on per-image correctness, diff = accuracy first − second; segmentation: Wilcoxon "
                  "signed-rank on per-image Dice, diff = mean per-image IoU first − second; p uncorrected, "
                  "* p < 0.05):", ""]
        lines += markdown_table(["task", "pair", "test", "diff", "p", "discordant (a✓b✗ / a✗b✓) or images"], [
            [row["task"], f"{row['a']} vs {row['b']}", "McNemar (exact)" if row["discordant"] else "Wilcoxon",
             f"{row['diff']:+.3f} {row['metric']}", f"{row['p']:.3g}{' *' if row['p'] < 0.05 else ''}",
             f"{row['discordant'][0]} / {row['discordant'][1]}" if row["discordant"] else f"{row['n']} images"]
            for row in pairwise_tests(entries)])
        pc = PAPER["compute"].get(set_name)
        lines += ["", f"### <a id=\"{table_anchor('UMS-Rep', cost)}\"></a>UMS-Rep Table {cost}: {set_name}, "
                      "training time and parameters", ""]
        rows = []
        base = next((r for _, r in entries if r["config"]["strategy"] == "baseline"), None)
        paper_ratio = _paper_ratios(set_name)
        for folder, r in entries:
            secs, params, counted = _cost(r)
            src = r.get("source") or next((r["tasks"][k] for k in COST_ENTRIES if k in r["tasks"]), None)
            src_s = src["train_seconds"] if src else 0.0
            rt = pt = ""
            if base and r is not base:
                rt = f"{secs / max(base['total_train_seconds'], 1e-9):.2f}"
                pt = f"{params / max(base['total_params'], 1):.2f}"
            known = "" if not src or src.get("seconds_known", True) else " (unknown)"
            rows.append([r["config"]["strategy"], counted, f"{src_s:.1f}{known}", f"{secs - src_s:.1f}", f"{secs:.1f}",
                         f"{params:,}", rt, pt, paper_ratio if r is not base else ""])
        if pc:
            rows.append(["*paper*", "", "", "", f"{pc['shared'][0]:.1f} / {pc['baseline'][0]:.1f} min",
                         f"{pc['shared'][1]:,} / {pc['baseline'][1]:,}", "", "", paper_ratio])
        lines += markdown_table(["strategy", "counted", "source model s", "fine-tuning s", "total s", "total params",
                                 "time / baseline", "params / baseline", "paper time / params ratio"], rows)
        lines += ["", "Counted under the package's one cost rule (stated with the claims at a glance).", ""]
    return lines


def compare_strategies(run_dirs, out=None, mix_presets: bool = False) -> str:
    """What ``finetune --compare`` prints: the claims at a glance (:func:`claims`) and the strategy
    tables of finished finetune runs (metrics with fold spread, the paired test of every pair,
    time and parameters beside the paper's); writes ``compare.md`` and ``claims.json`` in ``out``.
    Other folders are skipped with a logged reason."""
    runs = collect(run_dirs, ("finetune",), recursive=False, mix_presets=mix_presets)
    judged = paper_claims.judge(runs)
    text = compare_md("\n".join(claims(runs, judged) + strategy_tables(runs)), out)
    if out is not None:
        write_claims_json(judged, Path(out) / "claims.json")
    return text


def markdown_table(headers, rows) -> list[str]:
    """A Markdown table of already formatted cells, as lines (``DataFrame.to_markdown``)."""
    frame = pd.DataFrame([[str(c) for c in row] for row in rows], columns=list(headers))
    return frame.to_markdown(index=False, disable_numparse=True).splitlines()


def compare_md(text: str, out) -> str:
    """``text``, written to ``out/compare.md`` when ``out`` is given (the training commands' ``--compare``).

    Args:
        text: The comparison's Markdown.
        out: The folder to write ``compare.md`` in; None: none written.

    Returns:
        ``text``."""
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "compare.md", text)
    return text


VERDICT_CLASS = {"agrees": "agrees", "agrees (n.s.)": "agrees", "reversed": "reversed",
                 "differs (significant)": "reversed", "not significant": "ns", "inconclusive": "ns",
                 "not learned": "notrun", "not run": "notrun"}  # report.html colours each verdict cell by its class


CLAIMS_METHOD = (
    "Tests: classification — exact McNemar (binomial test on the discordant pairs) on per-image correctness, "
    "diff = accuracy a − b, with paired bootstrap 95% CIs of the accuracy and AUC differences "
    f"({metrics.N_RESAMPLES} resamples of the test images, the same for both arms, seed {metrics.SEED}, "
    "percentile interval); segmentation — Wilcoxon signed-rank on per-image Dice, diff = mean per-image IoU a − b "
    "with its paired bootstrap 95% CI. Images are paired by id. The paper calls a difference significant at "
    "McNemar p < 0.05. p (Holm): Holm-corrected within each task set. Verdicts (α = 0.05 on the Holm p): *agrees* — "
    "significant in the paper's direction; *reversed* — significant the other way; *not significant*; for a claim "
    "of no difference *agrees (n.s.)* or *differs (significant)*; *not learned* — an arm's head did not beat its "
    "majority class (segmentation: IoU 0.5) on every validation fold, so the pair is no fair comparison (its test is shown, outside the Holm family); "
    "*not run* — a run or its predictions missing. A "
    "time saving is judged fold by fold: fold k's ratio a / baseline is (source s + fold k's fine-tuning s summed "
    "over tasks) / the baseline's same; it *agrees* when every fold's ratio lies below 1, is *reversed* when every "
    "one lies above, and *inconclusive* otherwise (ours: the ratio for the folds' mean seconds, and the range over "
    "folds; runs without per-fold seconds: their totals' ratio). Parameters, the same in every fold, are judged on "
    "their one ratio.")


def _claim_text(c) -> str:
    if c.kind == "saving":
        return f"a shared representation saves training {c.what}"
    return {"better": f"{c.a} better than {c.b}",
            "direction": f"{c.a} {'lower' if c.lower_is_better else 'higher'} than {c.b}",
            "not significant": f"{c.a} and {c.b} do not differ"}[c.finding]


def _verdict_counts(judged) -> str:
    counts = {}
    for j in judged:
        counts[j.verdict] = counts.get(j.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _p(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _ours_cell(j) -> str:
    if not j.test:
        return j.note
    if j.claim.kind == "saving":
        text = f"ratio {j.diff:.2f}"
        if j.ci is not None:
            text += f", folds {j.ci[0]:.2f}–{j.ci[1]:.2f}"
        return text + (f" ({j.note})" if j.note else "")
    lo, hi = j.ci
    text = f"{j.extra.get('metric', '')} {j.diff:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    if math.isfinite(j.extra.get("auc_diff", math.nan)):
        alo, ahi = j.extra["auc_ci"]
        text += f"; AUC {j.extra['auc_diff']:+.3f} [{alo:+.3f}, {ahi:+.3f}]"
    return text + (f" ({j.note})" if j.note else "")


def claims(runs, judged=None) -> list:
    """The claims at a glance: one row per registered claim (:mod:`ums_rep.claims`) of every task
    set with a run — the paper's finding, ours (difference with its 95% CI, or our cost ratio and
    its spread over folds), p, Holm-corrected p, the verdict and a link to the claim's table — a
    line for the sets without any run, and each other registered paper's claims (its method text
    from :data:`ums_rep.claims.METHODS`) in a table of their own once one of them could be judged.

    Args:
        runs: ``(folder, results)`` pairs (:func:`collect`).
        judged: :func:`ums_rep.claims.judge` of ``runs`` when already computed.

    Returns:
        Markdown lines (none when no claim could be judged and no finetune run is present)."""
    judged = paper_claims.judge(runs) if judged is None else judged
    present = set(_finetune_sets(runs))
    others = {}
    for j in judged:
        if j.claim.paper != "UMS-Rep":
            others.setdefault(j.claim.paper, []).append(j)
    others = {paper: js for paper, js in others.items() if any(j.verdict != "not run" for j in js)}
    if not present and not others:
        return []
    lines = ["## Claims at a glance", ""]
    ums = [j for j in judged if j.claim.paper == "UMS-Rep"]
    lines += ["### UMS-Rep", "", f"Verdicts of its {len(ums)} registered claims: {_verdict_counts(ums)}.", ""]
    if present:
        lines += [CLAIMS_METHOD, "", f"Cost rule: {paper_claims.COST_RULE}.", ""]
        rows = []
        for j in ums:
            c = j.claim
            if c.task_set in present:
                where = f"{c.task_set} {c.task}" if c.task else f"{c.task_set} {c.a}"
                link = f"[Table {c.table}](#{table_anchor(c.paper, c.table)})"
                rows.append([_claim_text(c), where, c.paper_statement, _ours_cell(j), _p(j.p), _p(j.p_holm), j.verdict,
                             link])
        lines += markdown_table(["claim", "where", "paper", "ours: diff [95% CI]", "p", "p (Holm)", "verdict", "table"],
                                rows) + [""]
    absent = {}
    for j in ums:
        if j.claim.task_set not in present:
            absent[j.claim.task_set] = absent.get(j.claim.task_set, 0) + 1
    if absent:
        lines += ["Not run (no finetune run of the set): "
                  + ", ".join(f"{k} ({n} claims)" for k, n in absent.items()) + ".", ""]
    for paper, js in others.items():
        lines += [f"### {paper}", "", f"Verdicts of its {len(js)} registered claims: {_verdict_counts(js)}.", ""]
        if paper in paper_claims.METHODS:
            lines += [paper_claims.METHODS[paper], ""]
        rows = [[_claim_text(j.claim), f"{j.claim.task_set} {j.claim.task or ''}".strip(), j.claim.paper_statement,
                 _ours_cell(j), _p(j.p), _p(j.p_holm), j.verdict,
                 f"[Table {j.claim.table}](#{table_anchor(paper, j.claim.table)})"] for j in js]
        lines += markdown_table(["claim", "where", "paper", "ours: diff [95% CI]", "p", "p (Holm)", "verdict", "table"],
                                rows) + [""]
    return lines


def write_claims_json(judged, path) -> Path:
    """``claims.json``: one object per registered claim (:meth:`ums_rep.claims.Judged.as_json`).

    Args:
        judged: :func:`ums_rep.claims.judge`'s list.
        path: the file to write.

    Returns:
        The path written."""
    path = Path(path)
    atomic_write_text(path, json.dumps([j.as_json() for j in judged], indent=1, allow_nan=False) + "\n")
    return path


def scan_tables(runs) -> list:
    lines = []
    for folder, r in runs:
        if not r["command"].startswith("scan"):
            continue
        best = {k: v for k, v in r["best"].items() if not k.startswith("_")}
        lines += [f"### Talos scan: {r['config']['model']} ({folder.name}; {r['rounds']} rounds, "
                  f"{r['scan_seconds']:.0f} s)", ""]
        paper = PAPER["talos_echo"] if r["config"]["model"] == "echo" else {}
        lines += markdown_table(["parameter", "best here", "paper"], [[k, v, paper.get(k, "")] for k, v in best.items()])
        lines += ["", f"Best score: {r['best']['_score']}.", ""]
    return lines


def bench_tables(bench: dict | None) -> list:
    if not bench or not bench.get("compute_saving"):
        return []
    rows = []
    for s in bench["compute_saving"]:
        pc = PAPER["compute"][s["set"]]
        rows.append([s["set"], s["best_shared"], f"{s['time_ratio']:.2f}", f"{s['param_ratio']:.2f}",
                     f"{pc['shared'][0] / pc['baseline'][0]:.2f}", f"{pc['shared'][1] / pc['baseline'][1]:.2f}"])
    return ["### Compute saving (benchmarks.run)", ""] + markdown_table(
        ["task set", "best shared", "time ratio", "param ratio", "paper time ratio", "paper param ratio"], rows) + [""]


def figures(runs, out: Path) -> list:
    lines = ["## Figures", ""]
    for folder, r in runs:
        for pattern in FIGURES:
            for f in sorted(folder.glob(pattern)) + sorted(folder.glob(f"seed*/{pattern}"))[:1]:
                rel = os.path.relpath(Path(f).resolve(), Path(out).resolve())
                lines += [f"**{folder.name}/{f.name}**", "", f"![{f.name}]({Path(rel).as_posix()})", ""]
    return lines


def header(runs) -> list:
    def data_of(config):
        d = config.get("data")
        if isinstance(d, dict):  # scan: {"dataset": ..., "phantom": bool}
            return "phantom" if d.get("phantom") else f"real ({d.get('dataset')})"
        return str(d)
    data = sorted({data_of(r["config"]) for _, r in runs})
    presets = sorted({str(r["config"].get("preset")) for _, r in runs})
    seeds = sorted({str(r.get("seed")) for _, r in runs})
    v = runs[0][1].get("versions", {}) if runs else {}
    return ["# Reproduction report", "",
            f"- **Runs:** {len(runs)} results.json files", f"- **Data:** {', '.join(data)}",
            f"- **Presets:** {', '.join(presets)}", f"- **Seeds:** {', '.join(seeds)}",
            f"- **Versions:** Python {v.get('python')}, TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, "
            f"NumPy {v.get('numpy')}, scikit-learn {v.get('scikit-learn')}",
            f"- **Hardware:** {v.get('processor')}, {v.get('cpus')} CPUs, GPUs: {v.get('gpus') or 'none'} "
            f"({v.get('platform')})", "",
            "Phantom data are synthetic: they check that the pipeline runs and that directional claims can be "
            "measured; they do not reproduce the papers' absolute numbers.", ""]


def time_tables(run_dirs) -> list:
    """"How long each part took": the time table ``reproduce.sh`` wrote to ``times.json``
    (:mod:`ums_rep.reproduce_plan`) in each of ``run_dirs`` that holds one — stage, runs, seconds
    and share of the total; none without one."""
    lines = []
    for d in map(Path, run_dirs):
        times = reproduce_plan.read_times(d / reproduce_plan.TIMES)
        if times is None:
            continue
        try:
            rows = [[s["stage"], s["runs"], f"{s['seconds']:.0f}", f"{s['share']:.1%}"] for s in times["stages"]]
            rows.append(["**total**", sum(s["runs"] for s in times["stages"]), f"{times['total_seconds']:.0f}",
                         "100.0%" if times["total_seconds"] else "0.0%"])
        except (KeyError, TypeError, ValueError) as e:
            log.warning("skipped %s: not a reproduce.sh time table (%r)", d / reproduce_plan.TIMES, e)
            continue
        wall = times.get("wall_seconds")
        lines += [f"`reproduce.sh`'s time table ({d.name}/{reproduce_plan.TIMES}, preset {times.get('preset')}, "
                  f"written {times.get('written')}): the seconds of each stage's runs — a run finished by an earlier "
                  "invocation keeps the seconds it took then, a resumed one counts the attempt that finished it — "
                  "and each stage's share of their total.", ""]
        lines += markdown_table(["stage", "runs", "seconds", "share"], rows) + [""]
        missing = [r["step"] for r in times["steps"] if r.get("seconds") is None]
        if missing:
            lines += [f"No recorded time for {', '.join(missing)} (left out of the sums).", ""]
        if wall is not None:
            lines += [f"The last invocation's wall time up to this table: {wall:.0f} s (the report is built after "
                      "it).", ""]
    return ["## How long each part took", "", *lines] if lines else []


def build(run_dirs, out, bench=None, mix_presets: bool = False, preset: str | None = None) -> str:
    """Write ``report.md`` (opening with the claims at a glance), ``report.html`` and
    ``claims.json`` (:func:`write_claims_json`) in ``out``; return the Markdown."""
    out = Path(out)
    runs = collect(run_dirs, mix_presets=mix_presets, preset=preset)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{out}: cannot create the report folder ({e.strerror or e})") from e
    bench_body = json.loads(Path(bench).read_text()) if bench else None
    judged = paper_claims.judge(runs)
    lines = header(runs) + claims(runs, judged) + ["## UMS-Rep", ""] + table2(runs) + strategy_tables(runs) \
        + scan_tables(runs) + bench_tables(bench_body)
    for heading, tables in SECTIONS:
        lines += [f"## {heading}", ""] + tables(runs)
    lines += time_tables(run_dirs) + figures(runs, out)
    text = "\n".join(lines) + "\n"
    write_claims_json(judged, out / "claims.json")
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "report.html", to_html(text, out))
    log.info("wrote %s and %s (%d runs)", out / "report.md", out / "report.html", len(runs))
    return text


def to_html(text: str, base: Path) -> str:
    """Markdown → one HTML page (python-markdown) with every image inlined as base64 and every
    verdict cell coloured by :data:`VERDICT_CLASS` (green agrees, red reversed or differs, grey not
    significant, inconclusive or not run)."""
    import markdown
    body = markdown.markdown(text, extensions=["tables"])

    def inline(m):
        path = (Path(base) / m.group(1)).resolve()
        if not path.is_file():
            return m.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    verdicts = "|".join(re.escape(v) for v in sorted(VERDICT_CLASS, key=len, reverse=True))
    body = re.sub(rf"<td([^>]*)>({verdicts})</td>",
                  lambda m: f'<td{m.group(1)} class="verdict v-{VERDICT_CLASS[m.group(2)]}">{m.group(2)}</td>', body)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
             "font-size:13px}img{max-width:100%}"
             ".v-agrees{background:#d4edda;color:#155724}.v-reversed{background:#f8d7da;color:#721c24}"
             ".v-ns{background:#e2e3e5;color:#383d41}.v-notrun{background:#f6f6f6;color:#888}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Reproduction report</title>" \
           f"<style>{style}</style></head><body>{body}</body></html>\n"
