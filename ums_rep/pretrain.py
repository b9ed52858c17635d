"""``python -m ums_rep.pretrain --backbone NAME``: build the shared representation. The choices
are the records of :mod:`ums_rep.backbone_registry`:

* ``cdae`` — the denoising autoencoder on RSNA-layout data (UMS-Rep 4.1.1), scored per noise
  level against non-local means and wavelets (Table 2);
* ``echo`` — the dilated encoder on Doppler flow types (UMS-Rep 4.2, 4.2.1).

Writes ``model.keras``, ``normalizer.json``, ``history.csv``, ``results.json``,
``model_config.json`` (and ``denoising.png``) under ``--out``. The work is :func:`ums_rep.pretraining.pretrain`.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, parse_early, run_cli
from ums_rep import backbone_registry
from ums_rep.options import add_training_options, options_from
from ums_rep.presets import UMS_REP


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m ums_rep.pretrain", "Pretrain the shared CXR denoising autoencoder "
                         "(UMS-Rep Section 4.1.1, Table 2) or the dilated echo encoder (Section 4.2.1).",
                         presets=UMS_REP)
    parser.add_argument("--backbone", choices=backbone_registry.names(), default="cdae",
                        help="; ".join(f"{r.name}: {r.description}" for r in backbone_registry.BACKBONES.values())
                        + " (default cdae)")
    parser.add_argument("--params", type=Path, default=None, metavar="JSON",
                        help="hyper-parameters JSON (a Talos best.json from ums_rep.scan)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="override the preset's epochs")
    add_training_options(parser)
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from ums_rep.pretraining import PretrainOptions, pretrain  # noqa: E402

log = logging.getLogger("ums_rep.pretrain")


def main(argv=None) -> int:
    return run_cli(build_parser, lambda args: pretrain(options_from(PretrainOptions, args)), argv, log)


if __name__ == "__main__":
    raise SystemExit(main())
