"""``python -m ums_rep.predict --model RUN_DIR IMAGE_OR_DIR... [--out DIR]``: run a trained model
on one's own images (DICOM, PNG, JPEG, TIFF, BMP; a folder means every image file in it).

``RUN_DIR`` is a run folder of ``ums_rep.finetune``, ``ums_rep.pretrain`` or another paper's
training command registered with :mod:`ums_rep.predictors` (or a model file or seed folder
inside one); each image gets that run's own preprocessing (see :mod:`ums_rep.inference`). A
cross-validated finetune run predicts with its fold ensemble, as its test set was scored (UMS-Rep Sections 4.1.2 and 4.2): each fold's model on
the image normalised with that fold's normaliser, the probabilities (and segmentation
probability maps) averaged; ``--fold K`` predicts with fold K's model(s) alone. Writes under
``--out`` (default ``runs/predict-<timestamp>/``):

* ``predictions.csv`` — per image: ``file``, ``output`` (the name its PNGs start with), the
  original ``height`` and ``width``, ``<task>_p_<class>`` and ``<task>_pred`` per
  classification head, ``<task>_fraction`` (mask area) per segmentation head;
* ``<stem>_<task>_mask.png`` (0/255) and ``<stem>_<task>_overlay.png`` per segmentation head;
  ``<stem>_<task>_gradcam.png`` per classification head (Grad-CAM of the predicted class over
  the image; for a fold ensemble the mean of the folds' heatmaps of the ensemble's class);
  ``<stem>_saliency.png`` and ``<stem>_saliency_overlay.png`` (a saliency head); ``<stem>_denoised.png``
  (the CDAE) — all at the image's original size;
* ``args.json`` and ``predict.json`` (the run, model files, folds and preprocessing used,
  failures).

A bad run folder or model file stops the command with one line and exit code 1; an image that
cannot be read is reported in one line and skipped, and the exit code is then 1. ``--out`` may
be a new folder or an earlier ``ums_rep.predict`` output (files of the same name are replaced),
never another command's run folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

from data_prep.cli import base_parser, run_cli

log = logging.getLogger("ums_rep.predict")


def build_parser():
    parser = base_parser("python -m ums_rep.predict", "Run a trained model (a finetune, pretrain or other training "
                         "run folder) on your own images.", data=False, preset=False)
    parser.add_argument("--model", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder of ums_rep.finetune, ums_rep.pretrain or another paper's training "
                             "command (or a .keras file or seed<k> folder inside one)")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                        help="DICOM/PNG/JPEG/TIFF/BMP files, or folders: every image file directly inside")
    parser.add_argument("--fold", type=int, default=None, metavar="K",
                        help="a cross-validated ums_rep.finetune run: predict with fold K's model(s) and normaliser "
                             "(default: the fold ensemble, mean of every fold's probabilities, as the run's test "
                             "scores)")
    parser.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM heatmaps")
    return parser


def main(argv=None) -> int:
    return run_cli(build_parser, run, argv, log)  # RunFolderError, ModelFileError, ImageReadError: one line


def run(args) -> int:
    from ums_rep.inference import (FOLD_ENSEMBLE, FOLD_ENSEMBLE_GRADCAM, Predictor, image_files, output_folder,
                                   predict_files)
    from ums_rep.runs import save_args, write_json

    paths = image_files(args.images)
    predictor = Predictor.from_run(args.model, gradcam=not args.no_gradcam, fold=args.fold)
    out = output_folder(args.out, "predict", "ums_rep.predict")
    args.command = "ums_rep.predict"
    save_args(args, out)
    table, failures = predict_files(predictor, paths, out)
    members = predictor.members
    norms = [{"mean": m.normalizer.mean, "std": m.normalizer.std} for m in members]
    ensemble = len(members) > 1
    write_json(out / "predict.json", {
        "run": str(predictor.run), "run_command": predictor.command, "model_files": predictor.model_files,
        # the finetune folds whose models predicted (null: a model of a run without folds)
        "folds": predictor.folds,
        "combined": FOLD_ENSEMBLE if ensemble else "one model",
        # what a <stem>_<task>_gradcam.png shows (null: none written)
        "gradcam": None if not any(h.cam for m in members for h in m.heads)
        else FOLD_ENSEMBLE_GRADCAM if ensemble else "the model's, of its predicted class",
        "tasks": {t.name: {"kind": t.kind, "classes": list(t.classes)} for t in predictor.tasks},
        "preprocessing": {"geometry": predictor.geometry.method, "shape": list(predictor.geometry.shape),
                          "interpolation": "bicubic (area when a letter-box shrinks)", "quantised": "8-bit",
                          # per fold, in the order of "folds", for an ensemble
                          "normalizer": [{"fold": m.fold, **n} for m, n in zip(members, norms)] if ensemble
                          else norms[0]},
        "images": len(table), "failures": [{"file": f, "error": e} for f, e in failures]})
    log.info("wrote %s: %d image(s) predicted%s", out, len(table),
             f", {len(failures)} could not be read" if failures else "")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
