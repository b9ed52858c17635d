"""Conventions shared by every command-line entry point (DESIGN.md, "Conventions").

Every command takes ``--data``, ``--out``, ``--seed`` and ``--preset``, logs through
:mod:`logging` (never bare ``print``), and writes under ``runs/<command>-<timestamp>/`` unless
``--out`` says otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

PRESETS = ("quick", "paper")


@contextlib.contextmanager
def worker_pool(workers: int | None):
    """A ``ProcessPoolExecutor`` of spawned workers that do not re-run the command that started
    them. A spawned worker first re-imports the ``__main__`` module; for ``python -m
    ums_rep.finetune`` that is the whole command, TensorFlow included (seconds per worker, and its
    start-up lines again). The workers run functions of importable modules only, so ``__main__``
    is hidden from them while the pool starts its workers."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            yield pool
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class _DropRetracing(logging.Filter):
    """TensorFlow's "N out of the last M calls to <function> triggered tf.function retracing":
    expected here, where each fold and task predicts with a model of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger: ``time LEVEL name: message`` on stderr (left alone where a
    handler is already installed, e.g. by pytest or an embedding application). Unless
    ``verbose``, absl's INFO records (a "Sharding callback duration" line per checkpoint save)
    are dropped, and so are TensorFlow's retracing warnings."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    logging.getLogger("absl").setLevel(logging.NOTSET if verbose else logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    for f in [f for f in tf_logger.filters if isinstance(f, _DropRetracing)]:
        tf_logger.removeFilter(f)
    if not verbose:
        tf_logger.addFilter(_DropRetracing())


def base_parser(prog: str, description: str, *, data: bool = True, preset: bool = True,
                default_seed: int = 0, presets=PRESETS) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` carrying the options every command shares."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if data:
        parser.add_argument("--data", type=Path, default=None,
                            help="root folder holding one subfolder per dataset (rsna, shenzhen, "
                                 "montgomery, kermany, egd, doppler) in its published layout; "
                                 "default: generate phantom datasets")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/<command>-<timestamp>/)")
    parser.add_argument("--seed", type=int, default=default_seed, help="random seed")
    if preset:
        parser.add_argument("--preset", choices=tuple(presets), default="quick",
                            help="quick: minutes on 2 CPU cores; paper: the paper's sizes and epochs"
                                 + ("; tiny: seconds, for tests and notebooks" if "tiny" in presets else ""))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every training command shares: ``--deterministic``, ``--resume RUN_DIR``,
    ``--no-progress``."""
    parser.add_argument("--deterministic", action="store_true", help="op determinism (slower)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last completed epoch, with its arguments")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def default_out_dir(command: str, root: Path = Path("runs")) -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>`` (not created)."""
    return root / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
