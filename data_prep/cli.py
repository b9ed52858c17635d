"""Conventions shared by every command-line entry point (DESIGN.md, "Conventions").

Every command takes ``--data``, ``--out``, ``--seed`` and ``--preset``, logs through
:mod:`logging` (never bare ``print``), and writes under ``runs/<command>-<timestamp>/`` unless
``--out`` says otherwise.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

PRESETS = ("quick", "paper")


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger: ``time LEVEL name: message`` on stderr (left alone where a
    handler is already installed, e.g. by pytest or an embedding application)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)


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
