"""``python -m ums_rep.denoise --model RUN_DIR IMAGE_OR_DIR... [--noise gaussian20] [--mode
model|tiled]``: denoise one's own images (DICOM, PNG, JPEG, TIFF, BMP; a folder means every
image file in it) with the CDAE of an ``ums_rep.pretrain --backbone cdae`` run.

Each image is read as gray in [0, 1] and normalised with the run's ``normalizer.json``, then
denoised at the model's input size (``--mode model``, resized as ``data_prep.prepare`` does, as
``ums_rep.predict`` does) or at full resolution in overlapping tiles blended without seams
(``--mode tiled``); see :mod:`ums_rep.denoising`. ``--noise LEVEL`` (``gaussian<σ>``, σ on the
0–255 scale, or ``poisson``) first adds known noise to the clean image, at the resolution being
denoised, from a fixed stateless seed (``--seed``), and scores the noisy input, the CDAE and
scikit-image's non-local means against the clean image. Writes under ``--out`` (default
``runs/denoise-<timestamp>/``):

* ``<stem>_denoised.png`` — the denoised image at the image's original size;
* with ``--noise``: ``<stem>_noisy.png`` (the noisy input, at the original size) and
  ``quality.csv`` — per image and method (``noisy``, ``cdae``, ``nlm``): PSNR (dB), SSIM,
  MS-SSIM and the PSNR gain over the noisy input, at the resolution denoised (``height``,
  ``width``); the table is also logged;
* ``args.json`` and ``denoise.json`` (the run, model file, preprocessing, failures).

A run folder that is not a CDAE's, or a bad model file, stops the command with one line naming
it and exit code 1; an image that cannot be read is reported in one line and skipped, and the
exit code is then 1. ``--out`` may be a new folder or an earlier ``ums_rep.denoise`` output,
never another command's run folder.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, describe, parse_early, run_cli

log = logging.getLogger("ums_rep.denoise")

COMMAND = "ums_rep.denoise"


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m ums_rep.denoise", describe(__doc__), data=False, preset=False)
    parser.add_argument("--model", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder of ums_rep.pretrain --backbone cdae (or its model.keras)")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                        help="DICOM/PNG/JPEG/TIFF/BMP files, or folders: every image file directly inside")
    parser.add_argument("--mode", choices=("model", "tiled"), default="model",
                        help="model (default): at the model's input size, brought back to the original size; "
                             "tiled: at full resolution, in overlapping tiles of the model's size")
    parser.add_argument("--noise", default=None, metavar="LEVEL",
                        help="add known noise to each (clean) image first and write quality.csv: gaussian<σ> "
                             "(σ on the 0-255 scale: gaussian10 ... gaussian50) or poisson")
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads


def main(argv=None) -> int:
    return run_cli(build_parser, run, argv, log)  # RunFolderError, ModelFileError, ImageReadError: one line


def run(args) -> int:
    from ums_rep.denoising import OVERLAP, check_noise, denoise_files, denoiser, pipe_table
    from ums_rep.inference import Predictor, image_files, output_folder
    from ums_rep.runs import save_args, write_json

    if args.noise:
        check_noise(args.noise)
    paths = image_files(args.images)
    predictor = Predictor.from_run(args.model, gradcam=False)
    denoiser(predictor)
    out = output_folder(args.out, "denoise", COMMAND)
    args.command = COMMAND
    save_args(args, out)
    table, failures = denoise_files(predictor, paths, out, args.mode, args.noise, args.seed)
    n = len(paths) - len(failures)
    write_json(out / "denoise.json", {
        "run": str(predictor.run), "run_command": predictor.command, "model_files": predictor.model_files,
        "mode": args.mode, "noise": args.noise, "seed": args.seed,
        "preprocessing": {"geometry": predictor.geometry.method, "shape": list(predictor.geometry.shape),
                          "quantised": "8-bit", "tile_overlap": OVERLAP if args.mode == "tiled" else None,
                          "normalizer": {"mean": predictor.normalizer.mean, "std": predictor.normalizer.std}},
        "images": n, "failures": [{"file": f, "error": e} for f, e in failures]})
    if table is not None:
        cols = ["output", "mode", "noise", "height", "width", "method", "psnr", "ssim", "psnr_gain"]
        log.info("quality against the clean image (%s):\n%s", out / "quality.csv", pipe_table(table[cols]))
    log.info("wrote %s: %d image(s) denoised%s", out, n, f", {len(failures)} could not be read" if failures else "")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
