"""``python -m ums_rep.report --runs DIR... --out DIR``: every reproduced table beside the paper's
numbers, with the figures, in Markdown (``report.md``) and one self-contained HTML page
(``report.html``, images inlined).

The claims at a glance, the tables of every recognised run (UMS-Rep's, and another paper's as
its package registered them), the figures and ``reproduce.sh``'s time table: the report itself
is :func:`ums_rep.reporting.build`; this module is the command-line shell.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import PRESETS as PRESET_NAMES, base_parser, default_out_dir, parse_early, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m ums_rep.report", "Every reproduced table beside the papers' numbers, with the "
                         "figures: report.md and one self-contained report.html.", data=False, preset=False,
                         seed=False)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, metavar="DIR",
                        help="run folders, or folders holding them (searched recursively)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default=None,
                        help="report only the runs of this preset (default: every run found; runs of "
                             "different presets are refused unless --mix-presets)")
    parser.add_argument("--bench", type=Path, default=None, metavar="JSON",
                        help="a benchmarks.run JSON for the compute saving")
    parser.add_argument("--mix-presets", action="store_true", help="allow runs of different presets in one report")
    return parser


parse_early(__name__, build_parser, tensorflow=False)  # python -m: --help answers before pandas and sklearn load

from ums_rep.reporting import build  # noqa: E402

log = logging.getLogger("ums_rep.report")


def _report(args) -> None:
    build(args.runs, args.out or default_out_dir("report"), args.bench, args.mix_presets, args.preset)


def main(argv=None) -> int:
    return run_cli(build_parser, _report, argv, log)


if __name__ == "__main__":
    raise SystemExit(main())
