"""The options every training command shares, typed (:class:`TrainingOptions`), and the
argparse helpers that add them to a command's parser.

This module is light (argparse and dataclasses only): a command's parser imports it before
TensorFlow loads, so ``--help`` stays fast (:func:`data_prep.cli.parse_early`).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

PRECISIONS = ("auto", "float32", "mixed")  # ums_rep.precision.MODES (not imported: it loads Keras)


def add_training_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every training command shares: ``--deterministic``, ``--precision``,
    ``--resume RUN_DIR``, ``--no-progress``, ``--distribute`` (``ums_rep.runs.distribution``)."""
    parser.add_argument("--deterministic", action="store_true", help="op determinism (slower)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32 (default); mixed: float32 weights, 16-bit compute (bfloat16 on CPUs with "
                             "AVX512-BF16 or AMX and on GPUs of compute capability 8.0 or later, float16 with "
                             "loss scaling on older GPUs); auto: mixed where the hardware computes 16-bit types "
                             "natively, float32 elsewhere. results.json records the policy used")
    parser.add_argument("--distribute", choices=("auto", "none", "mirrored", "multiworker"), default="none",
                        help="none (default): one device; mirrored: tf.distribute.MirroredStrategy over this "
                             "machine's GPUs; multiworker: MultiWorkerMirroredStrategy over the machines TF_CONFIG "
                             "names (start the same command on each; only the chief writes --out); auto: "
                             "multiworker if TF_CONFIG names several tasks, else mirrored with several GPUs, else none")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last completed epoch, with its arguments")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logging only)")
    return parser


@dataclasses.dataclass
class TrainingOptions:
    """What every training command is told, typed: the options of :func:`data_prep.cli.base_parser` and
    :func:`add_training_options`, with their defaults. Each command's library function takes a
    subclass of it; its shell builds one from the parsed arguments (:func:`options_from`), a
    notebook or a caller in Python builds one directly. ``command`` names the command that owns
    the run folder (``ums_rep.runs.resume_args`` sets it).

    Attributes:
        preset: ``"tiny"`` (seconds, for tests), ``"quick"`` (minutes on 2 CPU cores) or
            ``"paper"`` (the papers' sizes and epochs).
        seed: The random seed.
        data: A folder with one subfolder per dataset, in the real layouts; None: phantoms.
        out: The run folder; None: ``runs/<command>-<timestamp>/``.
        deterministic: Deterministic kernels: reruns and resumed runs end bit-identical.
        precision: ``"float32"``, ``"mixed"`` (16-bit compute) or ``"auto"``.
        distribute: ``"none"``, ``"mirrored"``, ``"multiworker"`` (over ``TF_CONFIG``'s
            cluster) or ``"auto"``.
        resume: A run folder to continue from its last completed epoch, with its own arguments.
        no_progress: No progress bars.
        command: The command that owns the run folder.
    """

    preset: str = "quick"
    seed: int = 0
    data: Path | None = None
    out: Path | None = None
    deterministic: bool = False
    precision: str = "float32"
    distribute: str = "none"
    resume: Path | None = None
    no_progress: bool = False
    command: str = ""


def options_from(cls, args: argparse.Namespace):
    """An options dataclass ``cls`` from parsed arguments: each field from the argument of that
    name (the others, e.g. ``--verbose``, are the shell's); a field the parser lacks keeps its default."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def add_compare_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--compare RUN_DIR...`` and ``--mix-presets``: a training command's comparison of finished runs."""
    parser.add_argument("--compare", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="compare finished runs instead of training (other folders are skipped)")
    parser.add_argument("--mix-presets", action="store_true", help="with --compare: allow runs of different presets")
    return parser
