"""Patient-level splits (UMS-Rep Sections 4.1.1 and 4.2; MT-UNet Appendix B): train/val/test by fraction and k-fold
assignment, class-stratified where labels exist; no patient is ever in two parts.

Both are built on scikit-learn's ``StratifiedGroupKFold`` (groups = patients): a 70/20/10 split
is ten stratified patient folds of which seven become train, two val and one test.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

SPLIT_PRESETS = {"70/20/10": (0.7, 0.2, 0.1), "70/10/20": (0.7, 0.1, 0.2)}
PARTS = ("train", "val", "test")


class LeakageError(ValueError):
    """A patient appears in more than one split or fold."""


def _folds(df: pd.DataFrame, k: int, stratify: str | None, seed: int) -> np.ndarray:
    groups = df["patient_id"].astype(str).to_numpy()
    n_patients = len(set(groups))
    if n_patients < k:
        raise ValueError(f"{n_patients} patients are too few for {k} patient-level folds "
                         f"(a split in tenths needs at least 10 patients)")
    labels = np.zeros(len(df), int)  # one class: a shuffled patient k-fold
    if stratify is not None and df[stratify].notna().all() and df[stratify].nunique() > 1:
        labels = pd.factorize(df[stratify].astype(str))[0]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(len(df), -1, int)
    with warnings.catch_warnings():  # "least populated class has only N members" on tiny sets
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test_idx) in enumerate(splitter.split(df, labels, groups)):
            fold[test_idx] = i
    return fold


def assign_folds(df: pd.DataFrame, k: int = 10, stratify: str | None = "label", seed: int = 0) -> pd.Series:
    """Fold index 0..k-1 per row; every image of a patient shares its fold."""
    return pd.Series(_folds(df, k, stratify, seed), index=df.index, name="fold")


def split_patients(df: pd.DataFrame, fractions=SPLIT_PRESETS["70/20/10"], stratify: str | None = "label",
                   seed: int = 0, resolution: int = 10) -> pd.Series:
    """``train``/``val``/``test`` per row from ``fractions`` (multiples of 1/``resolution``)."""
    if isinstance(fractions, str):
        if fractions not in SPLIT_PRESETS:
            raise ValueError(f"unknown split preset {fractions!r}; expected one of {list(SPLIT_PRESETS)}")
        fractions = SPLIT_PRESETS[fractions]
    counts = [int(round(f * resolution)) for f in fractions]
    if len(counts) != 3 or sum(counts) != resolution or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions {fractions} must be three multiples of 1/{resolution} summing to 1")
    fold = _folds(df, resolution, stratify, seed)
    names = np.repeat(PARTS, counts)
    return pd.Series(names[fold], index=df.index, name="split")


def check_no_leakage(df: pd.DataFrame, column: str = "split", source: str = "manifest") -> None:
    """Raise :class:`LeakageError` listing patients found in more than one value of ``column``."""
    per_patient = df.groupby(df["patient_id"].astype(str))[column].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        examples = ", ".join(f"{p} ({sorted(df.loc[df.patient_id.astype(str) == p, column].astype(str).unique())})"
                             for p in leaked.index[:5])
        raise LeakageError(f"{source}: {len(leaked)} patient(s) appear in more than one {column}: {examples}")
