"""``python -m ums_rep.scan --model {echo,cdae,head}``: Talos hyper-parameter scans for the shared
encoders and the classification head (UMS-Rep Sections 4 and 4.2.1).

Search spaces (:data:`SPACES`):

* ``echo`` — the paper's: kernel {3, 5, 7}, dilation {2, 3}, dropout {0.1, 0.3, 0.5}, optimizer
  {SGD, Adam, RMSprop}, batch {16, 32, 64} (162 combinations; the paper's choice was 3, 2, 0.5,
  Adam, 16); scored by validation accuracy on the flow-type labels;
* ``cdae`` — first-layer width {16, 32, 64} (the others double), RMSprop learning rate
  {1e-4, 3e-4, 1e-3, 3e-3}, batch {8, 16, 32}; scored by the validation MSE of denoising
  (noise drawn once from a fixed seed, so every round sees the same pairs);
* ``head`` — units {64, 128, 256}, dropout {0.25, 0.5}, optimizer {SGD, Adam}, learning rate
  {1e-3, 1e-2}, batch {16, 32} for one classification task (``--task``) on the frozen shared
  encoder's features (computed once, so a round trains only the head).

Validation data are the patient-level validation split (never Talos' random ``val_split``,
which would put images of one patient on both sides). Every round is an ordinary ``model.fit``.

Outputs in ``--out``: ``scan.csv`` (Talos' table: one row per round, parameters and metrics),
``best.json`` (the winner in the keys ``pretrain``/``finetune --params`` read), one
``analyze_<param>.png`` per hyper-parameter (Talos ``Analyze.plot_box``: validation metric per
value), ``results.json``, and ``talos/`` (Talos' own experiment record and checkpoint).
``--resume RUN_DIR`` continues the interrupted scan in ``RUN_DIR`` with the arguments it was
started with (``RUN_DIR/args.json``), without repeating finished rounds (Talos 2 commits each
finished round in ``RUN_DIR/talos``; a round cut short is run again).

Over several machines: ``--shard I/N`` runs the I-th (1 to N) of N disjoint parts of the rounds
the same arguments would run on one machine (Talos' ``DistributeParamSpace``: the rounds left
after ``--round-limit``/``--fraction-limit``, shuffled with ``--seed`` and cut in N), each an
ordinary scan folder, resumable with ``--resume``; ``--merge DIR... [--out DIR]`` then joins the
N folders into one ``scan.csv`` (rows in the order one machine would have run them),
``best.json``, figures and ``results.json``. Each round seeds its training from ``--seed`` and its
own parameters, not from its place in the queue, so a round trains the same on any shard and the
merged table and winner are those of the unsplit scan.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, parse_early, run_cli
from ums_rep.options import options_from
from ums_rep.presets import SCAN_SPACES, UMS_REP
from ums_rep.tasks import CLASSIFICATION_TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m ums_rep.scan", "Talos hyper-parameter scan for a shared encoder or a "
                         "classification head (UMS-Rep Sections 4 and 4.2.1).", presets=UMS_REP)
    parser.add_argument("--model", choices=sorted(SCAN_SPACES), default="echo",
                        help="echo (default): the dilated echo encoder, the paper's space; cdae: the denoising "
                             "autoencoder; head: a classification head on the frozen shared encoder")
    parser.add_argument("--task", default="flow", metavar="TASK", help="classification task for --model head "
                        f"({', '.join(sorted(CLASSIFICATION_TASKS))}; default flow)")
    parser.add_argument("--encoder", type=Path, default=None, metavar="MODEL", help="shared encoder .keras for --model head "
                        "(default: pretrain one)")
    parser.add_argument("--fraction-limit", type=float, default=None, metavar="F", help="scan this fraction of the grid")
    parser.add_argument("--round-limit", type=int, default=None, metavar="N", help="at most this many rounds")
    parser.add_argument("--time-limit", default=None, metavar="HH:MM", help="stop starting rounds after this long")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs per round (default per preset)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue the interrupted scan in RUN_DIR with its arguments, without repeating the "
                             "rounds it finished")
    parser.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                        help="run only the I-th (1..N) of N disjoint parts of the rounds (one per machine); "
                             "join the parts' folders with --merge")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                        help="merge the finished --shard scans in these folders into one table and best.json "
                             "(written to --out); trains nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logging only)")
    return parser


def shard_arg(text: str) -> tuple:
    """``--shard I/N`` → ``(I, N)``, 1 <= I <= N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: shards are numbered 1 to N")
    return i, n


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

from ums_rep.scanning import ScanOptions, merge, scan  # noqa: E402

log = logging.getLogger("ums_rep.scan")


def _scan_or_merge(args) -> int:
    if args.merge:
        merge(args.merge, args.out)
        return 0
    return scan(options_from(ScanOptions, args))


def main(argv=None) -> int:
    return run_cli(build_parser, _scan_or_merge, argv, log)


if __name__ == "__main__":
    raise SystemExit(main())
