"""``python -m mt_unet.train --scheme {mtl1,mtl2,mtl3} --variant {full,bottleneck,top} [--model NAME]
[--seeds N] [--schedule {authors,package}] [--loss-form {paper,authors}]``: MT-UNet and the models it is compared with, on the eye-gaze layout (phantom by
default; MT-UNet Sections 3–5, Tables 1–3, Figures 2–3).

One code path for every model: the joint loop of :mod:`ums_rep.strategies` with the model as a
multi-output ``joint_model`` (one forward pass feeds both losses), the loss weighting of
:mod:`ums_rep.weighting` (MTL1/2/3 for MT-UNet, a plain sum for single-task models), Adam, and
RLRP (:mod:`mt_unet.schedule`: ×0.1 and reset to the best epoch after ``patience`` epochs
without improvement). Where the paper is silent, ``--schedule authors`` (the default) trains as
the authors' public code does: RLRP watches the weighted validation loss it optimises (σ terms
included), cuts on the (P+1)-th epoch without improvement (PyTorch's ``ReduceLROnPlateau``) and
a reset restores the optimizer's state with the weights and σ; ``--schedule package`` is this
package's earlier rule (the unweighted sum ``L_s + L_c``, which σ cannot lower without the
predictions improving; a cut on the P-th epoch; weights and σ only). ``--loss-form`` picks the
saliency term: ``paper`` KLD/σ_s² (Eqs. 1, 4; KLD under MTL3, Eq. 5), ``authors`` KLD/(2σ_s²)
(½·KLD under MTL3), as the authors' code computes it. Both are recorded in ``results.json``.

Data: the eye-gaze layout letter-boxed to the preset's shape (paper 640×416; ``--shape 640x512``
is the authors' code), saliency from duration-weighted fixations, patient-level class-stratified
70/10/20 split (the authors split per class, not per patient). Each seed trains a new model on
the same split; ``results.json`` holds every metric per seed and its median and std over seeds.
The data recipe is :mod:`mt_unet.data`, the training and comparison :mod:`mt_unet.experiment`;
this module is the command-line shell.

``--compare RUN_DIR...`` writes the Table 1/2/3-style comparison of finished runs
(``compare.md``).
"""
from __future__ import annotations

import argparse
import logging

from data_prep.cli import INPUT_ERRORS, base_parser, parse_early, run_cli, shape_arg
from ums_rep.options import add_compare_options, add_training_options, options_from

SCHEMES = ("mtl1", "mtl2", "mtl3", "dwa")
VARIANTS = ("full", "bottleneck", "top")  # mt_unet.model.VARIANTS
SCHEDULES = ("authors", "package")  # mt_unet.schedule.SCHEDULES
LOSS_FORMS = ("paper", "authors")  # ums_rep.weighting.LOSS_FORMS
MODELS = ("mtunet", "unets", "unetc", "resnet50", "inceptionresnetv2", "efficientnetv2s", "simplenet", "msinet",
          "vggssm")  # mt_unet.model.models()


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m mt_unet.train", "Train MT-UNet (or a model it is compared with) on the "
                         "eye-gaze data (MT-UNet Sections 3-5, Tables 1-3), or compare finished runs.")
    parser.add_argument("--scheme", choices=SCHEMES, default="mtl3",
                        help="loss weighting, MT-UNet only: uncertainty weighting mtl1 Eq. (1), mtl2 Eq. (4), mtl3 Eq. (5) "
                             "(default); dwa: dynamic weight average (Liu et al. CVPR 2019, Eq. 1), not in the paper")
    parser.add_argument("--variant", choices=VARIANTS, default="full",
                        help="classification features: full (MT-UNet), bottleneck (MT-UNetB), top (MT-UNetT)")
    parser.add_argument("--model", choices=MODELS, default="mtunet",
                        help="mtunet (default); unets/unetc: the single-task UNets; the others: the classifiers "
                             "and saliency models of Tables 1-2")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="independent trainings (default per preset)")
    parser.add_argument("--shape", type=shape_arg, default=None, metavar="HxW", help="input HxW (paper 640x416; code 640x512)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="override the preset's epochs")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default per preset)")
    parser.add_argument("--patience", type=int, default=None, metavar="P",
                        help="RLRP patience P, MT-UNet Appendix B (default per preset)")
    parser.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default per preset)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="authors",
                        help="RLRP where the paper is silent: authors (default; the authors' public code: watch "
                             "the weighted validation loss, cut on the (P+1)-th epoch without improvement, reset "
                             "the optimizer state too) or package (the unweighted sum, cut on the P-th, reset "
                             "weights and sigma only)")
    parser.add_argument("--loss-form", choices=LOSS_FORMS, default="paper",
                        help="the MTL saliency term: paper (default) KLD/sigma_s^2, Eqs. 1, 4 (KLD under MTL3, "
                             "Eq. 5); authors KLD/(2 sigma_s^2) (KLD/2 under MTL3), the authors' public code")
    add_training_options(parser)
    add_compare_options(parser)
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from mt_unet.experiment import MtUnetOptions, compare, run  # noqa: E402
from ums_rep.strategies import NonFiniteLossError  # noqa: E402

log = logging.getLogger("mt_unet.train")


def _run_or_compare(args) -> int:
    if args.compare:
        print(compare(args.compare, args.out, args.mix_presets))
        return 0
    return run(options_from(MtUnetOptions, args))


def main(argv=None) -> int:
    # a loss that turned non-finite: one line and exit status 3, as ums_rep.finetune gives
    return run_cli(build_parser, _run_or_compare, argv, log, {**INPUT_ERRORS, NonFiniteLossError: 3})


if __name__ == "__main__":
    raise SystemExit(main())
