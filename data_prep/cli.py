"""Conventions shared by every command-line entry point.

Every command takes ``--data ROOT`` (one subfolder per dataset; default: phantoms), ``--out``,
``--seed`` and ``--preset {tiny,quick,paper}`` where they apply, training commands ``--resume
RUN_DIR``; it logs through :mod:`logging` (never bare ``print``) and writes under
``runs/<command>-<timestamp>/`` unless ``--out`` says otherwise.

``--help`` answers without importing TensorFlow: each command module builds its parser from
light modules only and calls :func:`parse_early` before its heavy imports — the package's one
deferred import of TensorFlow, for a fast ``--help`` and fast usage errors.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PRESETS = ("tiny", "quick", "paper")



def describe(doc: str) -> str:
    """A command's ``--help`` description: the first paragraph of its module docstring, whole,
    without the usage line it opens with and without reST markup."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    text = re.sub(r"^``[^`]*``:\s*", "", text)
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")
    return text[:1].upper() + text[1:]


def parse_early(module_name: str, build_parser, *, tensorflow: bool = True) -> None:
    """Parse the command line now if the command module runs as a script (``python -m``), then
    (``tensorflow``) load TensorFlow with :func:`import_tensorflow`.

    Called by a command module after defining ``build_parser`` and before its heavy imports, so
    ``--help`` and usage errors answer in well under two seconds; ``main()`` then parses again
    (a cheap second parse). Imported as a library, the module is unaffected."""
    if module_name == "__main__":
        build_parser().parse_args()
        if tensorflow:
            import_tensorflow()


_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")


def import_tensorflow() -> None:
    """Import TensorFlow with its start-up lines printed once. TensorFlow 2.21 loads two native
    libraries that each print the start-up banner ("oneDNN custom operations are on", before its
    log level applies), so stderr is held while it loads and repeated lines are dropped."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            seen, lines = set(), []
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                key = _GLOG_PREFIX.sub("", line)
                if key not in seen:
                    seen.add(key)
                    lines.append(line)
            sys.stderr.write("".join(lines))
            sys.stderr.flush()


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


INPUT_ERRORS = {ValueError: 1, FileNotFoundError: 1}  # a bad file or argument, a missing file: exit status 1


def run_cli(build_parser, run, argv, log: logging.Logger, errors: dict = INPUT_ERRORS) -> int:
    """Every command's ``main(argv)``: parse, set up logging, ``run(args)``; an error of a type
    ``errors`` maps to an exit status (default: a ``ValueError`` such as a bad file or argument, a
    missing file: 1) becomes one logged line on ``log`` and that status instead of a traceback.
    ``run`` returning None means 0."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        status = run(args)
    except tuple(errors) as e:
        log.error("%s", e)
        return next(code for kind, code in errors.items() if isinstance(e, kind))
    return 0 if status is None else int(status)


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


def base_parser(prog: str, description: str, *, data: bool = True, preset: bool = True, seed: bool = True,
                default_seed: int = 0, presets=PRESETS, epilog: str | None = None,
                out_default: str = "runs/<command>-<timestamp>/") -> argparse.ArgumentParser:
    """An ``ArgumentParser`` carrying the options every command shares."""
    if epilog:  # an epilog is laid out by hand (a table), so the description is wrapped here
        parser = argparse.ArgumentParser(prog=prog, description=textwrap.fill(description, 88), epilog=epilog,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        parser = argparse.ArgumentParser(prog=prog, description=description)
    if data:
        parser.add_argument("--data", type=Path, default=None, metavar="ROOT",
                            help="root folder holding one subfolder per dataset (rsna, shenzhen, "
                                 "montgomery, kermany, egd, doppler) in its published layout; "
                                 "default: generate phantom datasets")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"output folder (default: {out_default})")
    if seed:
        parser.add_argument("--seed", type=int, default=default_seed,
                            help=f"random seed (default {default_seed})")
    if preset:
        parser.add_argument("--preset", choices=tuple(presets), default="quick",
                            help="quick (default): minutes on 2 CPU cores; paper: the paper's sizes and epochs"
                                 + ("; tiny: seconds, for tests and notebooks" if "tiny" in presets else ""))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def json_object_arg(text: str) -> dict:
    """An option given as a JSON object, e.g. ``--weights '{"lung_seg": 1, "abnormal": 0.5}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}): {text!r}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"lung_seg\": 1}}', got {text!r}")
    return value


def shape_arg(text: str) -> tuple:
    """``--shape HxW`` → ``(H, W)``."""
    m = re.fullmatch(r"(\d+)[xX×](\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 640x416")
    return int(m.group(1)), int(m.group(2))


def default_out_dir(command: str, root: Path = Path("runs")) -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>`` (not created)."""
    return root / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
