"""Small helpers the per-dataset loaders share: required files, CSV reading, empty folders."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


class DatasetLayoutError(ValueError):
    """A dataset folder that does not match its published layout; the message names the path."""


def require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: {what} folder not found")
    return path


def require_files(folder: Path, pattern: str, what: str) -> list[Path]:
    files = sorted(p for p in Path(folder).glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DatasetLayoutError(f"{folder}: no {what} ({pattern}) found")
    return files


def read_csv(path: Path, required: list[str], what: str, **kwargs) -> pd.DataFrame:
    """Read a CSV and check its columns, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: {what} CSV not found")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(f"{path}: malformed {what} CSV ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetLayoutError(f"{path}: {what} CSV lacks column(s) {missing}; has {list(df.columns)}")
    return df


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative``, refusing a path that escapes ``root`` (``..`` or absolute paths in a
    manifest must not reach outside the dataset)."""
    root = Path(root).resolve()
    target = (root / str(relative)).resolve()
    if target != root and root not in target.parents:
        raise DatasetLayoutError(f"{relative!r}: path escapes the dataset root {root}")
    return target
