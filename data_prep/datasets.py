"""The dataset registry: names → loader modules, and where each dataset's files come from —
``--data ROOT`` (``ROOT/<name>`` in its published layout) or a cached phantom."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType

from data_prep import doppler, egd, kermany, montgomery, rsna, shenzhen
from data_prep._layout import DatasetLayoutError
from data_prep.io import file_lock

log = logging.getLogger(__name__)

DATASETS: dict[str, ModuleType] = {"rsna": rsna, "shenzhen": shenzhen, "montgomery": montgomery,
                                   "kermany": kermany, "egd": egd, "doppler": doppler}


def get(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def cache_dir() -> Path:
    """``$UMS_REP_CACHE`` or ``~/.cache/ums_rep``."""
    return Path(os.environ.get("UMS_REP_CACHE", Path.home() / ".cache" / "ums_rep"))


def phantom(name: str, n: int = 200, seed: int = 0, size: int = 256) -> Path:
    """The phantom dataset folder for these arguments, generated on first use and cached.
    Concurrent callers take turns on a lock file beside it: one generates (the folder appears
    whole, renamed into place), the others wait and reuse it."""
    from data_prep.phantoms.layouts import GENERATOR_VERSION, generate
    get(name)
    target = cache_dir() / "phantoms" / f"{name}-v{GENERATOR_VERSION}-n{n}-s{seed}-px{size}"

    def complete():
        return target.is_dir() and any(target.iterdir())

    if not complete():
        with file_lock(target.with_name(target.name + ".lock")):
            if not complete():
                log.info("generating %d %s phantom images (seed %d, %d px) in %s", n, name, seed, size, target)
                generate(name, target, n=n, seed=seed, size=size)
    return target


def source(name: str, data_root=None, **phantom_kwargs) -> Path:
    """``data_root/name`` if ``data_root`` is given (it must exist), else a cached phantom."""
    get(name)
    if data_root is None:
        return phantom(name, **phantom_kwargs)
    path = Path(data_root) / name
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: dataset folder not found (--data ROOT must hold ROOT/{name})")
    return path


def load(name: str, root):
    """The dataset's manifest DataFrame, with a ``dataset`` column."""
    df = get(name).load(root)
    df.insert(0, "dataset", name)
    return df
