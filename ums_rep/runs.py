"""What every training command shares: presets, prepared data, the run folder, results.json
(DESIGN.md "Contracts"), and safe model saving/loading."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep import datasets
from data_prep.cli import default_out_dir
from data_prep.io import atomic_write_bytes, atomic_write_text, file_lock
from data_prep.pipeline import Prepared, load_prepared
from data_prep.prepare import prepare

log = logging.getLogger(__name__)


def versions() -> dict:
    import sklearn
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def prepared_data(name: str, data_root=None, *, size: int = 256, shape=None, seed: int = 0,
                  phantom_n: int = 200, phantom_size: int = 256, progress: bool = True) -> Prepared:
    """Prepared folder for dataset ``name`` (from ``--data`` or a phantom), made on first use in
    the cache and reused; an interrupted preparation is completed. Concurrent callers take turns
    on a lock file beside the entry, so each builds it or reuses the one another finished.
    ``info["prepared"]`` is the folder used."""
    src = datasets.source(name, data_root, n=phantom_n, seed=seed, size=phantom_size)
    geometry = f"{shape[0]}x{shape[1]}" if shape else f"{size}"
    key = hashlib.sha1(f"{Path(src).resolve()}|{geometry}|{seed}".encode()).hexdigest()[:10]
    out = datasets.cache_dir() / "prepared" / f"{name}-{geometry}-{key}"

    def complete():  # prepare.json is written after manifest.csv, last
        return (out / "manifest.csv").is_file() and (out / "prepare.json").is_file()

    if not complete():
        with file_lock(out.with_name(out.name + ".lock")):
            if not complete():
                prepare(name, src, out, size=(size, size), shape=shape, seed=seed, progress=progress)
    p = load_prepared(out)
    p.info["phantom"] = data_root is None
    p.info["prepared"] = str(out)
    return p


def run_dir(out, command: str) -> Path:
    """``--out``, or ``runs/<command>-<timestamp>`` (``data_prep.cli.default_out_dir``), created."""
    out = Path(out) if out else default_out_dir(command)
    out.mkdir(parents=True, exist_ok=True)
    return out


PATH_ARGS = ("data", "out", "encoder", "params")


def resume_args(args):
    """``--resume RUN_DIR``: the arguments the run was started with (``RUN_DIR/args.json``),
    so a resumed run continues exactly the interrupted one."""
    folder = getattr(args, "resume", None)
    if not folder:
        return args
    folder = Path(folder)
    saved = folder / "args.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved}: not found; --resume needs a run folder written by this command")
    for key, value in json.loads(saved.read_text()).items():
        if key not in ("resume", "no_progress", "verbose"):
            setattr(args, key, Path(value) if key in PATH_ARGS and value is not None else value)
    args.out = folder
    return args


def save_args(args, out) -> None:
    """``out/args.json``: what ``--resume`` reloads."""
    write_json(Path(out) / "args.json", {k: v for k, v in vars(args).items() if k != "resume"})


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def results(command: str, config: dict, tasks: dict, seed: int, **extra) -> dict:
    """A results.json body: per-task metrics, train seconds and trainable parameters; totals."""
    return {"command": command, "config": config, "tasks": tasks,
            "total_train_seconds": float(sum(t.get("train_seconds", 0.0) for t in tasks.values())),
            "total_params": int(sum(t.get("trainable_params", 0) for t in tasks.values())),
            "seed": seed, "versions": versions(), **extra}


def save_model(model: keras.Model, path) -> None:
    """Native ``.keras`` file, written to a temporary name and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_model(path) -> keras.Model:
    """Load with ``safe_mode=True``: a file carrying a Lambda layer (arbitrary code) is refused."""
    import ums_rep.heads  # noqa: F401  registers the package's custom layers
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def trainable_params(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def history_csv(path, history: list) -> None:
    atomic_write_bytes(path, pd.DataFrame(history).to_csv(index=False).encode())


def set_seed(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
