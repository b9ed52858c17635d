"""Up-front checks of a manifest, reported together in one error before any work starts."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is not imported at run time: prepare's pool workers import this module
    import pandas as pd


class DataValidationError(ValueError):
    """Everything wrong with a dataset, one problem per line, each naming the file(s)."""

    def __init__(self, source: str, problems: list[str], max_listed: int = 25):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:max_listed])
        more = f"\n  ... and {len(self.problems) - max_listed} more" if len(self.problems) > max_listed else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s) found before training:\n  {shown}{more}")


def manifest_problems(df: pd.DataFrame, classes=None, label_column: str = "label") -> list[str]:
    """Cheap checks that need no decoding: empty manifest, missing files, unknown labels,
    empty classes."""
    if df.empty:
        return ["manifest is empty (no images found)"]
    problems = []
    for p in df["path"]:
        if not Path(p).is_file():
            problems.append(f"{p}: image file missing")
    if "mask_paths" in df:
        for paths in df["mask_paths"]:
            problems += [f"{m}: mask file missing" for m in paths if not Path(m).is_file()]
    if classes is not None and label_column in df:
        labels = df[label_column]
        unknown = sorted(set(labels.dropna().astype(str)) - set(map(str, classes)))
        for u in unknown:
            example = df.loc[labels.astype(str) == u, "path"].iloc[0]
            problems.append(f"{example}: unknown label {u!r} (expected one of {list(classes)})")
        if labels.isna().any():
            problems.append(f"{df.loc[labels.isna(), 'path'].iloc[0]}: missing label")
        present = set(labels.dropna().astype(str))
        for c in classes:
            if str(c) not in present:
                problems.append(f"class {c!r} has no images")
    return problems


def image_problems(image, path, masks=(), mask_paths=()) -> list[str]:
    """Checks on a decoded image and its masks: constant images, mask size, binary masks."""
    problems = []
    if float(image.max()) - float(image.min()) < 1e-6:
        problems.append(f"{path}: constant image (every pixel = {float(image.min()):.3g})")
    for m, mp in zip(masks, mask_paths):
        if m.shape != image.shape:
            problems.append(f"{mp}: mask size {m.shape[1]}×{m.shape[0]} differs from image "
                            f"{image.shape[1]}×{image.shape[0]} ({path})")
    return problems
