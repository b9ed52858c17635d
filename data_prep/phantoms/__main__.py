"""``python -m data_prep.phantoms LAYOUT --out DIR --n N --seed S [--size PX]``

LAYOUT is one of rsna, shenzhen, montgomery, kermany, egd, doppler; ``all`` writes every layout
into ``DIR/<layout>`` (the ``--data ROOT`` convention); ``sheet`` draws the contact sheet PNG,
a real radiograph (``--real FILE``; default pydicom-data's RG1_UNCR.dcm when installed) beside
the phantoms; ``realism --real DIR [--masks DIR]`` compares the chest X-ray phantoms with a
folder of real images (:mod:`data_prep.phantoms.realism`): a Markdown table and a PNG figure.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from data_prep.cli import base_parser, default_out_dir, parse_early, setup_logging

LAYOUTS = ("rsna", "shenzhen", "montgomery", "kermany", "egd", "doppler")  # data_prep.phantoms.layouts.LAYOUTS


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m data_prep.phantoms", "Write phantom datasets in the real datasets' "
                         "file layouts, or draw the contact sheet.", data=False, preset=False)
    parser.add_argument("layout", choices=LAYOUTS + ("all", "sheet", "realism"),
                        help="one layout; all: every layout into DIR/<layout> (the --data ROOT convention); "
                             "sheet: the contact sheet PNG; realism: phantoms vs a folder of real images")
    parser.add_argument("--n", type=int, default=None,
                        help="images per layout (default 200); realism: phantoms to compare (default 100)")
    parser.add_argument("--real", type=Path, default=None, metavar="PATH",
                        help="realism: folder of real images (PNG/JPEG/DICOM); sheet: one real radiograph "
                             "(default: pydicom-data's RG1_UNCR.dcm when installed)")
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR",
                        help="realism: folder of the real images' lung masks (X.png or X_mask.png for image X)")
    parser.add_argument("--size", type=int, default=256, metavar="PX", help="image side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="processes (default: all cores)")
    return parser


parse_early(__name__, build_parser, tensorflow=False)  # python -m: --help answers before the generators load

from data_prep.phantoms.layouts import generate  # noqa: E402

log = logging.getLogger("data_prep.phantoms")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    if args.layout == "sheet":
        from data_prep.phantoms.sheet import contact_sheet
        out = args.out or default_out_dir("phantoms") / "contact_sheet.png"
        contact_sheet(out, seed=args.seed, size=args.size, real=args.real)
        log.info("contact sheet: %s", out)
        return 0
    if args.layout == "realism":
        from data_prep.phantoms.realism import run
        if args.real is None:
            build_parser().error("realism needs --real DIR, a folder of real images")
        out = args.out or default_out_dir("phantoms-realism")
        try:
            text = run(args.real, out, mask_dir=args.masks, n=args.n or 100, seed=args.seed)
        except (OSError, ValueError) as e:  # no such folder, no images, an unreadable file
            log.error("realism: %s", e)
            return 1
        log.info("realism table and figure in %s\n%s", out, text)
        return 0
    args.n = args.n or 200
    out = args.out or default_out_dir("phantoms")
    layouts = LAYOUTS if args.layout == "all" else (args.layout,)
    for layout in layouts:
        target = out / layout if args.layout == "all" else out
        start = time.perf_counter()
        generate(layout, target, n=args.n, seed=args.seed, size=args.size, workers=args.workers)
        seconds = time.perf_counter() - start
        log.info("%s: %d images in %.1f s (%.0f images/s)", layout, args.n, seconds, args.n / seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
