"""``python -m ums_rep.plan plan|progress|table --out OUT STEP...``: the plan, the progress lines
and the time table of ``reproduce.sh``.

``plan`` prints the stages, runs and estimates before the first run; ``progress`` the elapsed
time and ETA after the first ``--done`` steps; ``table`` writes ``OUT/times.json`` and prints the
time table. Other papers' stages come through :mod:`ums_rep.plugins`. The work is
:mod:`ums_rep.reproduce_plan`; this module is the command-line shell.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ums_rep import plugins, reproduce_plan


def _seconds(value: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected seconds ≥ 0")
    return v


def _closing_seconds(value: str) -> tuple:
    name, sep, seconds = value.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=SECONDS")
    return name, _seconds(seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ums_rep.plan",
                                     description="reproduce.sh's plan, progress lines and time table.")
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (("plan", "print the plan: stages, runs, estimates"),
                       ("progress", "print 'elapsed …; ETA …' after the first --done steps"),
                       ("table", "write OUT/times.json and print the time table")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", type=Path, required=True, metavar="DIR", help="reproduce.sh's --out")
        p.add_argument("steps", nargs="*", metavar="STEP", help="the planned steps, in order")
        if name == "progress":
            p.add_argument("--done", type=int, required=True, help="steps done so far (run or skipped)")
            p.add_argument("--elapsed", type=_seconds, required=True, help="seconds since reproduce.sh started")
        if name == "table":
            p.add_argument("--closing-seconds", type=_closing_seconds, action="append", default=[],
                           metavar="NAME=SECONDS", help="the seconds of a stage's closing step")
            p.add_argument("--wall-seconds", type=_seconds, default=None)
            p.add_argument("--preset", default=None)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    plugins.load()  # other papers' stages (reproduce_plan.register_stage)
    if args.what == "plan":
        print("\n".join(reproduce_plan.plan_lines(args.out, args.steps)))
    elif args.what == "progress":
        print(reproduce_plan.eta(args.out, args.steps, args.done, args.elapsed))
    else:
        times = reproduce_plan.time_table(args.out, args.steps, dict(args.closing_seconds), args.wall_seconds,
                                          args.preset)
        reproduce_plan.write_times(args.out, times)
        print("\n".join(reproduce_plan.table_lines(times)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
