"""``python -m ums_rep.finetune --strategy {independent,alternating,joint,baseline} --tasks SET``:
UMS-Rep's central experiment (Sections 4.1.2 and 4.2; Tables 3–10).

The shared encoder (``--encoder model.keras``, or pretrained first with the same preset and
seed) gets one head per task of the set; the strategy trains them (see
:mod:`ums_rep.strategies`); each task is scored on its test images. The ``baseline`` trains one
model per task from random initialisation with the same architecture; for the chest X-ray sets
its inputs first pass through a separately trained denoiser (the pretrained CDAE, frozen,
whose training time and parameters are counted in the baseline's totals, as in Table 4).

Task sets (Sections 4.1.2 and 4.2; ``--help`` lists them from :data:`ums_rep.tasks.TASK_SETS`):

=============  =====================================================  ============================
set            tasks                                                  data
=============  =====================================================  ============================
cxr-hetero     lung_seg, abnormal (normal/tb)                          Shenzhen (fold CV), test Montgomery
cxr-homo       bacterial_vs_normal, viral_vs_normal, bacterial_vs_viral Kermany train/val, test
echo-hetero    envelope_seg, flow (MV/MA/TR), quality (low/good)       Doppler 20% pool (fold CV), 10% test
echo-homo      mv_vs_ma, mv_vs_tr, ma_vs_tr                            as echo-hetero
=============  =====================================================  ============================

Cross-validation (:func:`ums_rep.tasks.cross_validation`): ``--folds K`` (K ≥ 2) partitions the
set's pool into K patient-level, class-stratified folds and trains K models, fold k validating;
``--folds 1`` (the tiny preset) trains one model on a hold-out (one fold of five); the quick
preset runs 3 folds, the paper preset the paper's 10. Every fold starts from a fresh copy of the
same pretrained encoder (the baseline from fresh random weights) and normalises its images with
the statistics of its own training images. The test set is scored by the fold ensemble (the mean
of the fold models' probabilities), and each fold's test metrics give the mean ± std in
``results.json``; each fold's validation metrics say whether every head learned (it beats its
majority class; segmentation IoU ≥ 0.5).

Arms of a comparison differ in the strategy alone: every head is trained by its task's optimizer
(Section 4.2: SGD for classification, Adam for segmentation) and the shared encoder, under every
strategy and in the baseline's models, by the preset's ``shared_optimizer``; every task trains on
as many of its own batches per epoch under every strategy (``results.json``: ``config.optimizers``,
``config.updates``).

Cost (Tables 4, 6, 8, 10): a shared run counts the source model (the encoder's pretraining
time, read from the ``results.json`` beside ``--encoder``, and all its parameters) plus each
head; the baseline counts its separate models plus, for CXR, the same pretrained CDAE as its
denoiser. Fine-tuning time is every second of each fold's training (steps, validation,
PreciseBN, checkpoints).

``--compare RUN_DIR...`` prints one table per task set (metrics, train time, parameters) with the
paired test of every pair of strategies (exact McNemar; Wilcoxon on per-image Dice for
segmentation), the papers' claims judged on the pairs the paper names (:mod:`ums_rep.claims`), and
writes ``compare.md`` and ``claims.json``.
"""
from __future__ import annotations

import argparse
import logging
import textwrap
from pathlib import Path

from data_prep.cli import base_parser, json_object_arg, parse_early, run_cli
from ums_rep import backbone_registry
from ums_rep.options import add_compare_options, add_training_options, options_from
from ums_rep.presets import UMS_REP
from ums_rep.tasks import FLOW_CLASSES, TASK_SETS

ALL_STRATEGIES = ("independent", "alternating", "joint", "baseline")  # ums_rep.strategies.REGISTRY (no TF for --help)

POOLS = {"all": "all of {train}", "non-test": "the {train} training set (its test split held out)",
         "val": "the 20% {train} part left after building the encoder"}


def _task_sets_help() -> str:
    """The ``--help`` epilog: each task set of :data:`ums_rep.tasks.TASK_SETS`, its tasks and data."""
    lines = ["task sets (--tasks): one head per task on the shared encoder, trained together;",
             "the pool is cross-validated (--folds K: K patient-level folds, paper 10-fold; --folds 1:",
             "one hold-out fold of five) and the test images are scored by the fold ensemble", ""]
    for name, sdef in TASK_SETS.items():
        tasks = ", ".join(s.task.name + (f" ({'/'.join(s.task.classes)})" if s.task.classes else " (segmentation)")
                          for s in sdef["tasks"])
        pool = POOLS[sdef["pool"]].format(train=sdef["train"].capitalize())
        test = sdef["test"].capitalize()
        test = f"all of {test} (external)" if sdef["test_split"] is None else f"the {test} {sdef['test_split']} split"
        lines += textwrap.wrap(tasks, 88, initial_indent=f"  {name:<12} ", subsequent_indent=" " * 15)
        lines += textwrap.wrap(f"pool: {pool}; test: {test}", 88, initial_indent=" " * 15, subsequent_indent=" " * 17)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m ums_rep.finetune", "Fine-tune UMS-Rep heads on a shared encoder with a strategy "
                         "(UMS-Rep Sections 4.1.2 and 4.2, Tables 3-10), or compare finished runs.", presets=UMS_REP,
                         epilog=_task_sets_help())
    parser.add_argument("--strategy", choices=ALL_STRATEGIES, default="joint",
                        help="independent: encoder frozen, each head trained on its own task; alternating: n_i batches of each "
                             "task in turn; joint (default): one weighted sum of the losses; baseline: one "
                             "separate model per task from random weights")
    parser.add_argument("--tasks", choices=sorted(TASK_SETS), default="cxr-hetero",
                        help="the task set (listed below; default cxr-hetero)")
    parser.add_argument("--encoder", type=Path, default=None, metavar="MODEL", help="pretrained encoder .keras (default: pretrain one)")
    parser.add_argument("--backbone", choices=backbone_registry.names(), default=None,
                        help="the backbone to pretrain when no --encoder is given, of the task set's modality "
                             "(default: the --encoder's, else the modality's: cdae for cxr, echo for echo)")
    parser.add_argument("--params", type=Path, default=None, metavar="JSON", help="hyper-parameters JSON (a Talos best.json): encoder keys "
                        "for pretraining, head_units/head_dropout/head_optimizer/head_learning_rate for the heads")
    parser.add_argument("--folds", type=int, default=None, metavar="K", help="cross-validation folds (default per preset)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="override the preset's epochs")
    parser.add_argument("--weights", type=json_object_arg, default=None, metavar="JSON", help='joint loss weights, JSON: {"lung_seg": 1, "abnormal": 0.5}')
    parser.add_argument("--weighting", choices=("fixed", "dwa"), default="fixed",
                        help="joint loss weighting: fixed (default; --weights, 1 each) or dwa (dynamic weight average, "
                             "Liu et al. CVPR 2019 Eq. 1; see ums_rep.weighting)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random rotation/zoom/shift of training images and masks (data_prep.augment; default: "
                             "on for the tiny and quick presets, off for paper)")
    parser.add_argument("--ratio", type=json_object_arg, default=None, metavar="JSON", help='alternating batch ratio, JSON: {"lung_seg": 2, "abnormal": 1}')
    parser.add_argument("--recommend-flow", default="TR", choices=FLOW_CLASSES,
                        help="echo-hetero: the flow type whose good-quality images are recommended (default TR)")
    add_training_options(parser)
    add_compare_options(parser)
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from ums_rep import experiment, reporting  # noqa: E402

log = logging.getLogger("ums_rep.finetune")


# --------------------------------------------------------------------------- compare

def compare(run_dirs, out=None, mix_presets: bool = False) -> str:
    """``--compare``: :func:`ums_rep.reporting.compare_strategies` (kept here for the notebooks)."""
    return reporting.compare_strategies(run_dirs, out, mix_presets)


def _run_or_compare(args) -> int:
    if args.compare:
        print(compare(args.compare, args.out, args.mix_presets))
        return 0
    return experiment.run(options_from(experiment.FinetuneOptions, args))


def main(argv=None) -> int:
    return run_cli(build_parser, _run_or_compare, argv, log)


if __name__ == "__main__":
    raise SystemExit(main())
