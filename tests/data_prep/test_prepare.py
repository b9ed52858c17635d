"""data_prep.prepare and its library data_prep.preparation: outputs, splits, training-only statistics, resume, and up-front validation."""
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.io import read_image
from data_prep.prepare import main
from data_prep.preparation import prepare
from data_prep.validate import DataValidationError


@pytest.fixture(scope="module")
def prepared_shenzhen(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "shenzhen"
    prepare("shenzhen", phantom_root / "shenzhen", out, size=(32, 32), progress=False)
    return out


def test_outputs_and_manifest(prepared_shenzhen):
    m = pd.read_csv(prepared_shenzhen / "manifest.csv", keep_default_na=False)
    assert len(m) == 30 and set(m.split) == {"train", "val", "test"}
    assert m.fold.between(0, 9).all()
    assert m.groupby("patient_id").split.nunique().max() == 1
    for r in m.itertuples():
        img = cv2.imread(str(prepared_shenzhen / r.image), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32) and img.dtype == np.uint8
        if r.mask:
            assert set(np.unique(cv2.imread(str(prepared_shenzhen / r.mask), 0))) <= {0, 255}
    assert (m["mask"] != "").sum() < len(m)  # the mask subset survives


def test_statistics_come_from_the_training_split_only(prepared_shenzhen):
    m = pd.read_csv(prepared_shenzhen / "manifest.csv")
    stats = pd.read_json(prepared_shenzhen / "stats.json", typ="series")
    train = np.concatenate([read_image(prepared_shenzhen / p).ravel() for p in m[m.split == "train"].image])
    everything = np.concatenate([read_image(prepared_shenzhen / p).ravel() for p in m.image])
    assert stats["mean"] == pytest.approx(train.mean(), abs=1e-6)
    assert stats["std"] == pytest.approx(train.std(), abs=1e-6)
    assert abs(everything.mean() - train.mean()) > 1e-6  # so the test can tell them apart


def test_rerun_resumes_and_skips_finished_files(prepared_shenzhen, phantom_root, caplog):
    images = sorted((prepared_shenzhen / "images").glob("*.png"))
    victim, kept = images[0], images[1]
    before = kept.stat().st_mtime_ns
    stats = (prepared_shenzhen / "stats.json").read_text()
    victim.unlink()
    (prepared_shenzhen / "manifest.csv").unlink()
    caplog.set_level("INFO")
    prepare("shenzhen", phantom_root / "shenzhen", prepared_shenzhen, size=(32, 32), progress=False)
    assert victim.is_file() and (prepared_shenzhen / "manifest.csv").is_file()
    assert kept.stat().st_mtime_ns == before
    assert "1 image(s) written, 29 already done" in caplog.text
    # the statistics still cover every training image, the skipped ones read back
    assert (prepared_shenzhen / "stats.json").read_text() == stats


def test_a_pool_of_workers_writes_what_one_process_writes(tmp_path):
    """The pool path (from 32 images) against the in-process one: the same files, manifest and
    training statistics (the workers return each image's moments; the merge keeps manifest order)."""
    from data_prep.phantoms.layouts import generate
    from data_prep.transforms import MeanNormalizer
    src = generate("shenzhen", tmp_path / "src", n=40, seed=5, size=64, progress=False)
    one = prepare("shenzhen", src, tmp_path / "one", size=(32, 32), workers=1, progress=False)
    two = prepare("shenzhen", src, tmp_path / "two", size=(32, 32), workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "one" / "stats.json").read_text() == (tmp_path / "two" / "stats.json").read_text()
    for p in one.image:
        assert (tmp_path / "one" / p).read_bytes() == (tmp_path / "two" / p).read_bytes()
    train = one[one.split == "train"].image
    again = MeanNormalizer.fit(read_image(tmp_path / "two" / p) for p in train)  # a second pass over the files
    assert pd.read_json(tmp_path / "two" / "stats.json", typ="series").to_dict() == pytest.approx(
        {"mean": again.mean, "std": again.std}, rel=1e-12)


def test_pool_workers_import_no_heavy_library():
    """prepare's spawned workers import data_prep.prepare_item: without pandas, scikit-learn or
    TensorFlow it starts in a fraction of a second (the pool's start was most of its cost)."""
    import subprocess
    import sys
    code = ("import sys, data_prep.prepare_item; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'tensorflow', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_problems_are_reported_together_before_training(phantom_root, tmp_path):
    src = tmp_path / "shenzhen"
    shutil.copytree(phantom_root / "shenzhen", src)
    imgs = sorted((src / "CXR_png").glob("*.png"))
    data = imgs[0].read_bytes()
    imgs[0].write_bytes(data[: len(data) // 3])  # truncated PNG
    cv2.imwrite(str(imgs[1]), np.zeros((64, 64), np.uint8))  # constant image
    mask = next((src / "mask").glob("*.png"))
    cv2.imwrite(str(mask), np.zeros((10, 12), np.uint8))  # wrong size
    with pytest.raises(DataValidationError) as e:
        prepare("shenzhen", src, tmp_path / "out", size=(32, 32), progress=False)
    text = str(e.value)
    assert imgs[0].name in text and "truncated PNG" in text
    assert imgs[1].name in text and "constant image" in text
    assert mask.name in text and "differs from image" in text
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_empty_class_and_missing_file_are_caught_up_front(phantom_root, tmp_path):
    src = tmp_path / "shenzhen"
    shutil.copytree(phantom_root / "shenzhen", src)
    for p in (src / "CXR_png").glob("*_1.png"):
        p.unlink()
    with pytest.raises(DataValidationError, match="class 'tb' has no images"):
        prepare("shenzhen", src, tmp_path / "out", progress=False)


def test_parallel_egd_with_saliency(phantom_root, tmp_path):
    out = tmp_path / "egd"
    m = prepare("egd", phantom_root / "egd", out, shape=(80, 52), workers=2, progress=False)
    assert m.saliency.str.endswith(".png").all()
    sal = cv2.imread(str(out / m.saliency.iloc[0]), cv2.IMREAD_UNCHANGED)
    assert sal.dtype == np.uint16 and sal.shape == (80, 52) and sal.max() == 65535
    # split 70/10/20 by default for MT-UNet's data
    assert m.split.value_counts().idxmax() == "train" and (m.split == "test").sum() >= (m.split == "val").sum()


def test_cli(phantom_root, tmp_path):
    assert main(["doppler", "--src", str(phantom_root / "doppler"), "--out", str(tmp_path / "d"),
                 "--size", "32", "--folds", "5"]) == 0
    m = pd.read_csv(tmp_path / "d" / "manifest.csv")
    assert set(m.fold) == set(range(5)) and {"flow_type", "quality"} <= set(m.columns)
    assert main(["doppler", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "e")]) == 1
