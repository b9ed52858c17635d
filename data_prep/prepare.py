"""``python -m data_prep.prepare DATASET [--data ROOT | --src DIR] --out DIR``: preprocess a dataset once.

Reads the dataset through its loader, checks it up front, resizes or letter-boxes its images,
splits it by patient and writes its manifest and statistics (``images/``, ``masks/``,
``saliency/`` for ``egd``, ``manifest.csv``, ``stats.json``); an interrupted run is completed
by running it again. The work is :func:`data_prep.preparation.prepare`; this module is the
command-line shell.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, parse_early, setup_logging, shape_arg

DATASETS = ("doppler", "egd", "kermany", "montgomery", "rsna", "shenzhen")  # data_prep.preparation.DEFAULT_SPLIT
SPLITS = ("70/10/20", "70/20/10")  # data_prep.splits.SPLIT_PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m data_prep.prepare", "Preprocess a dataset once: check it, resize or "
                         "letter-box its images, split it by patient, and write its manifest and statistics.",
                         preset=False, out_default="runs/prepared/<dataset>/")
    parser.add_argument("dataset", choices=DATASETS, help="the dataset to prepare")
    parser.add_argument("--src", type=Path, default=None, metavar="DIR",
                        help="the dataset's own folder in its published layout, instead of --data ROOT "
                             "(ROOT/<dataset>)")
    parser.add_argument("--size", type=int, default=256, metavar="PX", help="square resize side (default 256)")
    parser.add_argument("--shape", type=shape_arg, default=None, metavar="HxW",
                        help="letterbox to HxW instead (default 640x416 for egd)")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="train/val/test fractions (default per dataset: 70/10/20 for egd, else 70/20/10)")
    parser.add_argument("--folds", type=int, default=10, metavar="K",
                        help="patient-level folds within each split part (the manifest's fold column; default 10)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes reading and writing images (default: all cores)")
    parser.add_argument("--gaze-source", choices=("fixations", "eye_gaze"), default="fixations",
                        help="egd: the saliency maps from fixations.csv (duration-weighted, default) or the "
                             "raw 60 Hz eye_gaze.csv samples")
    return parser


parse_early(__name__, build_parser, tensorflow=False)  # python -m: --help answers before OpenCV and pandas load

from data_prep import datasets  # noqa: E402
from data_prep.preparation import prepare  # noqa: E402
from data_prep.validate import DataValidationError  # noqa: E402

log = logging.getLogger("data_prep.prepare")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is not None and args.src is not None:
        parser.error("give --data ROOT (the folder holding ROOT/<dataset>) or --src DIR (the dataset's folder), "
                     "not both")
    setup_logging(args.verbose)
    out = args.out or Path("runs") / "prepared" / args.dataset
    try:
        src = args.src or (datasets.source(args.dataset, args.data) if args.data is not None
                           else datasets.phantom(args.dataset, seed=args.seed))
        prepare(args.dataset, src, out, size=(args.size, args.size), shape=args.shape, split=args.split,
                folds=args.folds, seed=args.seed, workers=args.workers, gaze_source=args.gaze_source)
    except (DataValidationError, ValueError) as e:
        log.error("%s", e)
        return 1
    log.info("prepared %s in %s", args.dataset, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
