"""Patient-level splits and folds: sizes, stratification and no leakage, for every dataset."""
import numpy as np
import pandas as pd
import pytest

from data_prep import datasets
from data_prep.splits import LeakageError, assign_folds, check_no_leakage, split_patients


def _frame(n_patients=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "a" if rng.random() < 0.3 else "b"
        rows += [{"patient_id": f"p{p}", "label": label}] * int(rng.integers(1, 5))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("preset,expected", [("70/20/10", (0.7, 0.2, 0.1)), ("70/10/20", (0.7, 0.1, 0.2))])
def test_split_fractions_and_stratification(preset, expected):
    df = _frame()
    df["split"] = split_patients(df, preset, seed=1)
    patients = df.drop_duplicates("patient_id")
    share = patients.split.value_counts(normalize=True)
    for part, frac in zip(("train", "val", "test"), expected):
        assert share[part] == pytest.approx(frac, abs=0.03)
        part_a = (patients[patients.split == part].label == "a").mean()
        assert part_a == pytest.approx((patients.label == "a").mean(), abs=0.06)
    check_no_leakage(df)


def test_seed_changes_the_split_and_is_reproducible():
    df = _frame()
    a, b, c = (split_patients(df, seed=s) for s in (1, 1, 2))
    assert (a == b).all() and not (a == c).all()


def test_folds_cover_everyone_once():
    df = _frame(200)
    df["fold"] = assign_folds(df, 10, seed=0)
    assert set(df.fold) == set(range(10))
    check_no_leakage(df, "fold")
    sizes = df.drop_duplicates("patient_id").fold.value_counts()
    assert sizes.max() - sizes.min() <= 6


def _several_images_per_patient(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every patient holding at least two images: patients that have one (RSNA,
    Shenzhen and Montgomery give each image its own patient) are merged in pairs of the same
    label where possible (a lone leftover joins the last pair), so a split made per image
    instead of per patient would separate some patient's images."""
    df = df.copy()
    sizes = df.groupby("patient_id").patient_id.transform("size")
    single = df[sizes == 1].sort_values(["label", "patient_id"]).index
    merged = [f"merged{i // 2}" for i in range(len(single))]
    if len(single) % 2:
        merged[-1] = merged[-2]
    df.loc[single, "patient_id"] = merged
    return df


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_no_patient_in_two_splits_or_folds(phantom_root, name):
    df = _several_images_per_patient(datasets.load(name, phantom_root / name))
    per_patient = df.groupby("patient_id").size()
    assert per_patient.min() >= 2 and df.patient_id.nunique() >= 10, per_patient
    df["split"] = split_patients(df, seed=0)
    df["fold"] = assign_folds(df, 5, seed=0)
    assert set(df.split) == {"train", "val", "test"} and set(df.fold) == set(range(5))
    for col in ("split", "fold"):
        assert df.groupby("patient_id")[col].nunique().max() == 1
        check_no_leakage(df, col)


def test_leakage_is_reported_with_the_patient():
    df = pd.DataFrame({"patient_id": ["p1", "p1", "p2"], "split": ["train", "test", "train"]})
    with pytest.raises(LeakageError, match="p1"):
        check_no_leakage(df)


def test_too_few_patients_is_a_clear_error():
    df = pd.DataFrame({"patient_id": ["a", "b", "c"], "label": ["x", "y", "x"]})
    with pytest.raises(ValueError, match="3 patients are too few"):
        split_patients(df)
