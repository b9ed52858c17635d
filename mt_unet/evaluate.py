"""``python -m mt_unet.evaluate MODEL.keras [--data DIR] [--preset P] [--split test]``: score a
saved MT-UNet (or UNetS/UNetC/baseline) on the eye-gaze data (MT-UNet Section 5, Tables 1–3).

Saliency: KLD, CC and HS per image, median over images (the authors' code); classification:
accuracy, Hand & Till multi-class AUC and one-vs-rest AUC per class (Y1 normal, Y2 enlarged
heart / CHF, Y3 pneumonia). The scoring itself is :mod:`mt_unet.scoring`; this module is the
command-line shell.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, parse_early, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m mt_unet.evaluate", "Score a saved MT-UNet-family model on the eye-gaze "
                         "data (MT-UNet Section 5, Tables 1-3).")
    parser.add_argument("model", type=Path, help="a .keras file written by mt_unet.train")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="the split of the prepared eye-gaze data to score (default test)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (default 8)")
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from mt_unet.scoring import evaluate_saved  # noqa: E402

log = logging.getLogger("mt_unet.evaluate")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        evaluate_saved(args.model, args.out, split=args.split, batch=args.batch, preset=args.preset,
                       data=args.data, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:  # ModelFileError, RunFolderError: one line naming the file
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
