"""``python -m mt_unet.evaluate MODEL.keras [--split test]``: score a saved MT-UNet (or
UNetS/UNetC/baseline) on the eye-gaze data it was trained on (MT-UNet Section 5, Tables 1–3).

The preset, ``--data`` and ``--seed`` default to those its ``mt_unet.train`` run recorded
(``args.json`` in the run folder above ``seed<k>/model.keras``); each can be overridden, and a
``--preset`` whose images are not the model's input size is refused. Saliency: KLD, CC and HS per
image, median over images; classification: accuracy, Hand & Till multi-class AUC and one-vs-rest
AUC per class. The scoring itself is :mod:`mt_unet.scoring`; this module is the command-line shell.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import PRESETS, base_parser, parse_early, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m mt_unet.evaluate", "Score a saved MT-UNet-family model on the eye-gaze "
                         "data it was trained on (MT-UNet Section 5, Tables 1-3).", data=False, seed=False,
                         preset=False)
    parser.add_argument("model", type=Path, help="a .keras file written by mt_unet.train")
    own = "(default: what the model's mt_unet.train run recorded in its args.json"
    parser.add_argument("--data", type=Path, default=None, metavar="ROOT",
                        help=f"root folder holding the egd dataset in its published layout {own}; phantom "
                             "for a model file outside a run folder)")
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help=f"whose phantom data to score on, refused unless its images are the model's input "
                             f"size {own}; outside a run folder, the preset of the model's input size)")
    parser.add_argument("--seed", type=int, default=None, help=f"seed of the data split {own}; else 0)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="the split of the prepared eye-gaze data to score (default test)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (default 8)")
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from mt_unet.scoring import evaluate_saved  # noqa: E402

log = logging.getLogger("mt_unet.evaluate")


def _evaluate(args) -> None:
    evaluate_saved(args.model, args.out, split=args.split, batch=args.batch, preset=args.preset, data=args.data,
                   seed=args.seed)


def main(argv=None) -> int:
    return run_cli(build_parser, _evaluate, argv, log)  # ModelFileError, RunFolderError, a wrong preset: one line


if __name__ == "__main__":
    raise SystemExit(main())
