"""What every training command shares: presets, prepared data, the run folder, results.json
(``command``, ``config``, per-task ``metrics``/``train_seconds``/``trainable_params``, totals,
seed, versions), and safe model saving/loading."""
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


class RunFolderError(ValueError):
    """A run folder a command may not use (another command's, finished, not writable); the
    message is one line naming the folder."""


def _read_json(path: Path) -> dict:
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: cannot read ({e})") from e
    return body if isinstance(body, dict) else {}


def _check_owner(folder: Path, command: str, resume: bool) -> None:
    """Refuse ``folder`` unless it is new, or ``command``'s unfinished run being resumed."""
    option = "--resume" if resume else "--out"
    args_file, results_file = folder / "args.json", folder / "results.json"
    if args_file.is_file():
        owner = _read_json(args_file).get("command")
        if owner != command:
            raise RunFolderError(f"{folder}: a run folder of {owner or 'an unknown command (args.json names none)'}, "
                                 f"not of {command}; {option} refused")
    if results_file.is_file():
        owner = _read_json(results_file).get("command", "an unknown command")
        raise RunFolderError(f"{folder}: holds a finished run of {owner} (results.json); {option} refused, "
                             "nothing is overwritten")
    if args_file.is_file() and not resume:
        raise RunFolderError(f"{folder}: holds an interrupted {command} run; continue it with --resume {folder} "
                             "or choose another --out")


def image_side(preset: dict, modality: str) -> int:
    """The training image side of a preset for ``modality`` ("cxr" or "echo"): presets give one
    side for both, or one per modality."""
    side = preset["image"]
    return int(side[modality] if isinstance(side, dict) else side)


def run_dir(out, name: str, command: str, *, resume: bool = False) -> Path:
    """``--out``, or ``runs/<name>-<timestamp>`` (``data_prep.cli.default_out_dir``), created and
    writable. A run folder belongs to the ``command`` that made it: another command's folder, a
    finished run, or (without ``resume``) an interrupted one raises :class:`RunFolderError`."""
    out = Path(out) if out else default_out_dir(name)
    if out.is_dir():
        _check_owner(out, command, resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"{out}: cannot create the run folder ({e.strerror or e})") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"{out}: the run folder is not writable")
    return out


PATH_ARGS = ("data", "out", "encoder", "params")


def resume_args(args, command: str):
    """``--resume RUN_DIR``: the arguments the run was started with (``RUN_DIR/args.json``),
    so a resumed run continues exactly the interrupted one. ``args.command`` is set to
    ``command`` (``save_args`` records it); a folder of another command, or a finished run,
    raises :class:`RunFolderError`."""
    args.command = command
    folder = getattr(args, "resume", None)
    if not folder:
        return args
    folder = Path(folder)
    saved = folder / "args.json"
    if not saved.is_file():
        raise RunFolderError(f"{saved}: not found; --resume needs a run folder written by {command}")
    _check_owner(folder, command, resume=True)
    for key, value in _read_json(saved).items():
        if key not in ("resume", "no_progress", "verbose", "command"):
            setattr(args, key, Path(value) if key in PATH_ARGS and value is not None else value)
    args.out = folder
    return args


def save_args(args, out) -> None:
    """``out/args.json``: what ``--resume`` reloads, with the ``command`` that owns the folder
    (set by :func:`resume_args`)."""
    if not getattr(args, "command", None):
        raise ValueError("save_args: args.command is not set (call resume_args first)")
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


def results(command: str, config: dict, tasks: dict, seed: int, source: dict | None = None, **extra) -> dict:
    """A results.json body: per-task metrics, train seconds and trainable parameters; totals.
    ``source`` (UMS-Rep: the shared encoder's pretraining, or the CXR baseline's separate
    denoiser; ``{"role", "train_seconds", "trainable_params"}``) is counted in the totals, as
    the paper's Tables 4, 6, 8 and 10 count it."""
    parts = list(tasks.values()) + ([source] if source else [])
    body = {"command": command, "config": config, "tasks": tasks,
            "total_train_seconds": float(sum(t.get("train_seconds", 0.0) for t in parts)),
            "total_params": int(sum(t.get("trainable_params", 0) for t in parts)),
            "seed": seed, "versions": versions(), **extra}
    if source:
        body["source"] = source
    return body


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


class ModelFileError(ValueError):
    """A model file that cannot be used: the message is one line naming the file and the problem."""


MODEL_KINDS = {
    # expect= → (what the option wants, in words; the check)
    "encoder": ("an encoder (one image input, one output), e.g. ums_rep.pretrain's model.keras",
                lambda m: len(m.inputs) == 1 and len(m.outputs) == 1),
    "mt_unet": ("an eye-gaze model with a saliency and/or disease output, e.g. mt_unet.train's model.keras",
                lambda m: len(m.inputs) == 1 and isinstance(m.output, dict)
                and bool({"saliency", "disease"} & set(m.output))),
}


def load_model(path, expect: str | None = None) -> keras.Model:
    """Load a ``.keras`` file with ``safe_mode=True`` (a Lambda layer, arbitrary code, is
    refused); layers saved under a mixed precision policy follow the global policy in force
    (:func:`ums_rep.precision.follow_policy`). ``expect`` names a kind of :data:`MODEL_KINDS` the model must be. Anything else —
    no such file, not a ``.keras`` zip, corrupt, refused, the wrong kind — raises
    :class:`ModelFileError`."""
    import zipfile

    import ums_rep.heads  # noqa: F401  registers the package's custom layers
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder, not a .keras model file")
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: not a .keras model file (suffix {path.suffix or 'none'!r})")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a valid .keras file (not a zip archive; truncated or another format)")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, KeyError, TypeError... for bad archives
        text = " ".join(str(e).split())
        if "safe_mode" in text or "Lambda" in text:
            raise ModelFileError(f"{path}: holds a Lambda layer (arbitrary Python code), refused by "
                                 "safe_mode; rebuild the model without it") from None
        raise ModelFileError(f"{path}: cannot load the model ({type(e).__name__}: {text[:200]})") from None
    from ums_rep.precision import follow_policy
    model = follow_policy(model)  # saved under a mixed policy: computes in the policy in force now
    if expect is not None:
        want, ok = MODEL_KINDS[expect]
        if not ok(model):
            outputs = list(model.output) if isinstance(model.output, dict) else list(model.output_names)
            raise ModelFileError(f"{path}: a model with {len(model.inputs)} input(s) and {len(model.outputs)} "
                                 f"output(s) {outputs}, not {want}")
    return model


def trainable_params(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def history_csv(path, history: list) -> None:
    atomic_write_bytes(path, pd.DataFrame(history).to_csv(index=False).encode())


def set_seed(seed: int, deterministic: bool = False) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
