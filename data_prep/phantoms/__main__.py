"""``python -m data_prep.phantoms LAYOUT --out DIR --n N --seed S [--size PX]``

LAYOUT is one of rsna, shenzhen, montgomery, kermany, egd, doppler; ``all`` writes every layout
into ``DIR/<layout>`` (the ``--data ROOT`` convention); ``sheet`` draws the contact sheet PNG.
"""
from __future__ import annotations

import logging
import time

from data_prep.cli import base_parser, default_out_dir, setup_logging
from data_prep.phantoms.layouts import LAYOUTS, generate

log = logging.getLogger("data_prep.phantoms")


def main(argv=None) -> int:
    parser = base_parser("python -m data_prep.phantoms", "Write phantom datasets in the real datasets' "
                         "file layouts, or draw the contact sheet.", data=False, preset=False)
    parser.add_argument("layout", choices=LAYOUTS + ("all", "sheet"))
    parser.add_argument("--n", type=int, default=200, help="images per layout (default 200)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    if args.layout == "sheet":
        from data_prep.phantoms.sheet import contact_sheet
        out = args.out or default_out_dir("phantoms") / "contact_sheet.png"
        contact_sheet(out, seed=args.seed, size=args.size)
        log.info("contact sheet: %s", out)
        return 0
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
