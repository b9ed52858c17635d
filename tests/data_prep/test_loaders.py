"""One loader per dataset reads its published layout (phantoms and quirks of the real files)."""
import shutil

import numpy as np
import pandas as pd
import pytest

from data_prep import datasets, doppler, egd, kermany, montgomery, rsna, shenzhen
from data_prep._layout import DatasetLayoutError
from data_prep.io import read_image, read_mask
from data_prep.phantoms.layouts import TRUTH


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_every_loader_gives_the_common_columns(phantom_root, name):
    df = datasets.load(name, phantom_root / name)
    assert len(df) == 30
    assert {"dataset", "path", "patient_id", "label", "mask_paths"} <= set(df.columns)
    assert set(df.label) <= set(datasets.get(name).CLASSES)
    assert df.path.map(lambda p: __import__("os").path.isfile(p)).all()


def test_rsna_one_row_per_image_with_its_boxes(phantom_root):
    df = rsna.load(phantom_root / "rsna")
    labels = pd.read_csv(phantom_root / "rsna" / "stage_2_train_labels.csv")
    assert df.patient_id.is_unique and len(df) == labels.patientId.nunique()
    opacity = df[df.label == "Lung Opacity"]
    assert (opacity.target == 1).all() and opacity.boxes.map(len).ge(1).all()
    assert (df[df.label != "Lung Opacity"].target == 0).all()
    assert sum(map(len, df.boxes)) == int((labels.Target == 1).sum())


def test_rsna_unknown_class_is_refused(phantom_root, tmp_path):
    root = tmp_path / "rsna"
    shutil.copytree(phantom_root / "rsna", root)
    info = pd.read_csv(root / "stage_2_detailed_class_info.csv")
    info.loc[0, "class"] = "Pneumothorax"
    info.to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    with pytest.raises(DatasetLayoutError, match="unknown class.*Pneumothorax"):
        rsna.load(root)


def test_shenzhen_labels_and_mask_subset(phantom_root):
    df = shenzhen.load(phantom_root / "shenzhen")
    assert set(df.abnormal) == {0, 1}
    assert (df.label == np.where(df.abnormal == 1, "tb", "normal")).all()
    assert (df.path.str[-5] == df.abnormal.astype(str)).all()  # last digit of the name
    with_mask = df.mask_paths.map(len)
    assert 0 < with_mask.sum() < len(df)
    truth = pd.read_csv(phantom_root / "shenzhen" / TRUTH).set_index("patient_id")
    for r in df[with_mask > 0].head(3).itertuples():
        assert read_mask(r.mask_paths).mean() == pytest.approx(truth.loc[r.patient_id, "lung_fraction"], abs=0.02)


def test_montgomery_unites_left_and_right(phantom_root):
    df = montgomery.load(phantom_root / "montgomery")
    assert df.mask_paths.map(len).eq(2).all()
    r = df.iloc[0]
    left, right = read_mask(r.mask_paths[0]), read_mask(r.mask_paths[1])
    union = read_mask(r.mask_paths)
    assert union.sum() == left.sum() + right.sum() > 0  # two disjoint lungs
    # patient's left lung is on the image's right
    assert np.nonzero(left)[1].mean() > np.nonzero(right)[1].mean()


def test_combined_lung_archive_naming(phantom_root, tmp_path):
    """CXR_png/ + masks/: Shenzhen masks carry _mask, Montgomery masks do not."""
    sz = tmp_path / "sz"
    shutil.copytree(phantom_root / "shenzhen" / "CXR_png", sz / "CXR_png")
    shutil.copytree(phantom_root / "shenzhen" / "mask", sz / "masks")
    assert shenzhen.load(sz).mask_paths.map(len).sum() == len(list((sz / "masks").glob("*.png")))
    mg = tmp_path / "mg"
    shutil.copytree(phantom_root / "montgomery" / "CXR_png", mg / "CXR_png")
    (mg / "masks").mkdir()
    for p in (phantom_root / "montgomery" / "ManualMask" / "leftMask").glob("*.png"):
        shutil.copy(p, mg / "masks" / p.name)
    assert montgomery.load(mg).mask_paths.map(len).eq(1).all()


def test_bad_file_names_and_empty_folders(tmp_path):
    (tmp_path / "CXR_png").mkdir()
    with pytest.raises(DatasetLayoutError, match="no Shenzhen images"):
        shenzhen.load(tmp_path)
    (tmp_path / "CXR_png" / "scan_7.png").write_bytes(b"x")
    with pytest.raises(DatasetLayoutError, match="scan_7.png.*CHNCXR"):
        shenzhen.load(tmp_path)
    with pytest.raises(DatasetLayoutError, match="CXR_png folder not found"):
        montgomery.load(tmp_path / "nothing")


def test_kermany_patients_keyed_by_split_and_nested_copy_ignored(phantom_root, tmp_path):
    root = tmp_path / "kermany"
    shutil.copytree(phantom_root / "kermany", root)
    shutil.copytree(root / "chest_xray", root / "chest_xray" / "chest_xray")  # the archive's duplicate
    df = kermany.load(root)
    assert len(df) == 30
    assert df.patient_id.str.split("/").str[0].eq(df.source_split).all()
    assert set(df.label) == {"normal", "bacterial", "viral"}
    assert (df.label == "normal").eq(df.path.str.contains("/NORMAL/")).all()


def test_kermany_rgb_jpegs_read_as_gray(phantom_root):
    import tensorflow as tf
    df = kermany.load(phantom_root / "kermany")
    # as stored (1 or 3 channels), with libjpeg's default (accurate) inverse DCT
    decoded = {p: tf.io.decode_jpeg(tf.io.read_file(p), dct_method="INTEGER_ACCURATE").numpy() for p in df.path}
    rgb = [p for p, a in decoded.items() if a.shape[-1] == 3]
    gray = [p for p, a in decoded.items() if a.shape[-1] == 1]
    assert rgb and gray, {p: a.shape for p, a in decoded.items()}  # both kinds of Kermany JPEG
    for p in rgb + gray[:3]:
        img = read_image(p)
        # the source's pixels as TensorFlow's decoder gives them, converted to luma (ITU-R 601), on [0, 1]
        want = tf.image.rgb_to_grayscale(decoded[p].astype(np.float32)).numpy()[..., 0] / 255 \
            if decoded[p].shape[-1] == 3 else decoded[p][..., 0] / 255
        assert img.dtype == np.float32 and img.shape == want.shape, (p, img.shape, want.shape)
        np.testing.assert_allclose(img, want, atol=1.5 / 255, err_msg=p)
        assert want.std() > 0.05  # an image, not a flat field


def test_egd_manifest_and_both_time_headers(phantom_root, tmp_path):
    df = egd.load(phantom_root / "egd")
    assert set(df.label) == set(egd.CLASSES)
    assert (df.height > df.width).all()  # portrait radiographs
    fix = egd.load_gaze(phantom_root / "egd", "fixations")
    raw = egd.load_gaze(phantom_root / "egd", "eye_gaze")
    assert (fix.x >= 0).all() and (raw.x >= 0).all()  # -1 (off image) dropped
    original = pd.read_csv(phantom_root / "egd" / "fixations.csv")
    assert len(fix) == int((original.X_ORIGINAL >= 0).sum()) < len(original)
    root = tmp_path / "egd"
    root.mkdir()
    original.rename(columns={"Time (in secs)": "TIME(in secs)"}).to_csv(root / "fixations.csv", index=False)
    assert len(egd.load_gaze(root, "fixations")) == len(fix)
    original.drop(columns=["Time (in secs)"]).to_csv(root / "fixations.csv", index=False)
    with pytest.raises(DatasetLayoutError, match="no time column"):
        egd.load_gaze(root, "fixations")


def test_saliency_map_follows_the_letterbox():
    gaze = pd.DataFrame({"x": [30.0, 500.0, -1.0], "y": [100.0, 10.0, 5.0], "weight": [1.0, 5.0, 9.0]})
    sal = egd.saliency_map(gaze, in_shape=(240, 200), out_shape=(640, 416), sigma_px=4)
    assert sal.shape == (640, 416) and sal.sum() == pytest.approx(1.0, abs=1e-5)
    # only (30, 100) is inside the 200-wide image; scale = min(640/240, 416/200) = 2.08, top pad 70
    y, x = np.unravel_index(np.argmax(sal), sal.shape)
    assert abs(x - 30 * 2.08) <= 1 and abs(y - (100 * 2.08 + (640 - 499) // 2)) <= 1
    with pytest.raises(ValueError, match="no gaze point inside"):
        egd.saliency_map(gaze.iloc[1:], (240, 200))


def test_saliency_is_duration_weighted():
    gaze = pd.DataFrame({"x": [20.0, 80.0], "y": [50.0, 50.0], "weight": [0.2, 0.8]})
    sal = egd.saliency_map(gaze, (100, 100), sigma_px=3)
    assert sal[50, 80] == pytest.approx(4 * sal[50, 20], rel=0.01)


def test_doppler_quality_subset_and_path_escape(phantom_root, tmp_path):
    df = doppler.load(phantom_root / "doppler")
    assert df.quality.isna().any() and df.quality.dropna().isin(["good", "low"]).all()
    assert (df.label == df.flow_type).all() and df.mask_paths.map(len).eq(1).all()
    root = tmp_path / "doppler"
    root.mkdir()
    pd.DataFrame({"path": ["../../etc/passwd"], "patient_id": ["P1"], "flow_type": ["MV"]}).to_csv(
        root / "manifest.csv", index=False)
    with pytest.raises(DatasetLayoutError, match="escapes the dataset root"):
        doppler.load(root)
    pd.DataFrame({"path": ["a.png"], "patient_id": ["P1"], "flow_type": ["AV"]}).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DatasetLayoutError, match="unknown or empty flow_type.*AV"):
        doppler.load(root)
    (root / "manifest.csv").write_text("path;patient\n\"unterminated,\n")
    with pytest.raises(DatasetLayoutError, match="manifest.csv"):
        doppler.load(root)


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetLayoutError, match="ROOT/egd"):
        datasets.source("egd", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'chexpert'"):
        datasets.get("chexpert")
