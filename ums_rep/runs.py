"""What every training command shares: presets, prepared data, the run folder, results.json
(``command``, ``config``, per-task ``metrics``/``train_seconds``/``trainable_params``, totals,
seed, versions), and safe model saving/loading."""
from __future__ import annotations

import dataclasses
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
from data_prep.preparation import prepare
from ums_rep.precision import set_precision

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


DISTRIBUTE = ("auto", "none", "mirrored", "multiworker")
_STRATEGIES: dict = {}  # one per process: a second MultiWorkerMirroredStrategy cannot join the cluster again


def cluster_workers() -> int:
    """How many tasks (chief and workers) ``TF_CONFIG``'s cluster names; 0 without TF_CONFIG."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"TF_CONFIG is not a JSON object ({e})") from None
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def distribution(name: str = "none") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``--distribute name`` asks for: ``none``, the default
    strategy (one device); ``mirrored``, ``MirroredStrategy`` over this machine's GPUs (its CPU
    without one); ``multiworker``, ``MultiWorkerMirroredStrategy`` over the cluster ``TF_CONFIG``
    names (every worker runs the same command with its own ``task``); ``auto``, multiworker if
    ``TF_CONFIG`` names more than one task, else mirrored if this machine has several GPUs, else
    none. Created once per process, before any model (call it first in a command)."""
    if name not in DISTRIBUTE:
        raise ValueError(f"--distribute {name!r}: expected one of {', '.join(DISTRIBUTE)}")
    if name == "auto":
        name = ("multiworker" if cluster_workers() > 1 else
                "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker" and cluster_workers() < 1:
        raise ValueError("--distribute multiworker needs TF_CONFIG naming the cluster and this task, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    if name not in _STRATEGIES:
        _STRATEGIES[name] = (tf.distribute.MirroredStrategy() if name == "mirrored"
                             else tf.distribute.MultiWorkerMirroredStrategy())
        log.info("--distribute %s: %d replica(s) in sync", name, _STRATEGIES[name].num_replicas_in_sync)
    return _STRATEGIES[name]


def task_of(dist) -> tuple:
    """``(task type, index)`` of this process in a multi-worker cluster; ``(None, None)`` otherwise."""
    resolver = getattr(dist, "cluster_resolver", None)
    if resolver is None or not getattr(dist.extended, "_in_multi_worker_mode", lambda: False)():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(dist=None) -> bool:
    """Whether this process writes the run folder: the only one, or the cluster's chief (its
    ``chief`` task, or worker 0 where the cluster names no chief)."""
    task_type, task_id = task_of(dist) if dist is not None else (None, None)
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                                        not json.loads(os.environ.get("TF_CONFIG") or "{}")
                                                        .get("cluster", {}).get("chief"))


def worker_folder(out: Path, dist) -> Path:
    """Where a non-chief worker writes what the chief writes to ``out`` (checkpoints, results,
    figures): a folder of its own under the system's temporary folder, named after ``out`` and
    the task, so ``--resume`` on that machine finds its checkpoints (TensorFlow's multi-worker
    guide: every worker saves, only the chief's copy is kept). Removed with
    :func:`discard_worker_folder` when the run ends."""
    out, root = Path(out), _workers_root()
    if root in out.parents:  # already a worker's folder (finetune's encoder pretraining inside its own)
        return out
    task_type, task_id = task_of(dist)
    tag = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]  # two runs named alike do not share one
    return root / f"{out.name}-{tag}-{task_type}{task_id}"


def _workers_root() -> Path:
    return Path(tempfile.gettempdir()).resolve() / "ums_rep-workers"


def discard_worker_folder(out: Path, dist) -> None:
    """A non-chief worker's folder, removed at the end of its run (the chief's is the result);
    one inside another worker folder is left to the run that owns that one."""
    import shutil
    if dist is not None and not is_chief(dist) and Path(out).parent == _workers_root():
        shutil.rmtree(out, ignore_errors=True)


def run_dir(out, name: str, command: str, *, resume: bool = False, dist=None) -> Path:
    """``--out``, or ``runs/<name>-<timestamp>`` (``data_prep.cli.default_out_dir``), created and
    writable. A run folder belongs to the ``command`` that made it: another command's folder, a
    finished run, or (without ``resume``) an interrupted one raises :class:`RunFolderError`.
    Under a multi-worker ``dist``, a worker other than the chief gets its :func:`worker_folder`
    instead, so only the chief writes the run folder."""
    out = Path(out) if out else default_out_dir(name)
    if dist is not None and not is_chief(dist):
        out = worker_folder(out, dist)
        if not resume and out.parent == _workers_root() and out.is_dir():  # left by a run killed earlier
            import shutil
            shutil.rmtree(out)
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


@dataclasses.dataclass
class Run:
    """A started run (:func:`start`).

    Attributes:
        options: The options in force: under ``--resume``, the interrupted run's own.
        out: The run folder (a multi-worker run's non-chief worker: its temporary folder).
        resume: Whether the run continues an interrupted one.
        dist: The ``tf.distribute`` strategy (:func:`distribution`).
        policy: The dtype policy set (:func:`ums_rep.precision.set_precision`).
        checked: What ``start``'s ``check`` returned (None without one).
    """
    options: object
    out: Path
    resume: bool
    dist: tf.distribute.Strategy
    policy: str
    checked: object = None


def start(options, command: str, name, check=None) -> Run:
    """The prologue of every training run, in its one right order.

    1. :func:`resume_args`: under ``options.resume`` the interrupted run's own options (its
       ``args.json``) replace the given ones. First, because every later step reads them: the
       strategy, the seed, the precision and the run folder are the run's, not the command line's.
    2. :func:`distribution`: the strategy ``options.distribute`` names. Before any tensor
       exists: ``MultiWorkerMirroredStrategy`` configures TensorFlow's collective ops, which
       fails once the runtime has started (and seeding or the precision policy may start it).
    3. :func:`set_seed` (with ``options.deterministic``): before any weight or data draw, so a
       rerun and a resumed run draw the same numbers.
    4. :func:`ums_rep.precision.set_precision`: before any model is built, since layers take
       the global dtype policy when they are made.
    5. ``check(options)``: whatever the library checks before work begins (options, the preset),
       after the steps above and before the run folder exists, so a refused run leaves no folder.
    6. :func:`run_dir`: the run folder, needing the resumed ``out`` and the strategy (under
       multi-worker training only the chief writes the run folder); ``options.out`` becomes it.
    7. :func:`save_args`: ``args.json``, for a new run only (a resumed run's is the record it
       resumes from), once the folder exists: its presence marks a run ``--resume`` can continue.

    Args:
        options: The library's options (a :class:`ums_rep.options.TrainingOptions`), changed in
            place: ``command``, under ``resume`` the saved options, and ``out``.
        command: The command that owns the run folder, e.g. ``"ums_rep.pretrain"``.
        name: The default run folder's name (``runs/<name>-<timestamp>``) when ``options.out``
            is None, or a function of the (resumed) options that returns it.
        check: Called with the options before the run folder is made; what it returns is
            :attr:`Run.checked`, what it raises stops the run.

    Returns:
        The started :class:`Run`.

    Raises:
        RunFolderError: ``resume`` is not an interrupted run of ``command``, or the run folder
            cannot be used (another command's, a finished run, not writable).
        ValueError: An unknown ``distribute`` or ``precision``.
    """
    options = resume_args(options, command)
    resume = bool(options.resume)
    dist = distribution(options.distribute)
    set_seed(options.seed, options.deterministic)
    policy = set_precision(options.precision)
    checked = check(options) if check is not None else None
    out = run_dir(options.out, name(options) if callable(name) else name, command, resume=resume, dist=dist)
    options.out = out
    if not resume:
        save_args(options, out)
    return Run(options, out, resume, dist, policy, checked)


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
    # expect= → (what the option wants, in words; the check); register_model_kind adds others
    "encoder": ("an encoder (one image input, one output), e.g. ums_rep.pretrain's model.keras",
                lambda m: len(m.inputs) == 1 and len(m.outputs) == 1),
}


def register_model_kind(name: str, want: str, check) -> None:
    """Add a kind of model that :func:`load_model`'s ``expect`` can name (another package's).

    Args:
        name: The kind's name.
        want: What such a model is, in words (the error message says the file is not that).
        check: ``model → bool``: whether a loaded model is of the kind."""
    MODEL_KINDS[name] = (want, check)


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
