"""read_image / read_mask: DICOM (real and phantom), PNG/JPEG variants, and clear errors."""
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from data_prep.io import ImageReadError, atomic_directory, atomic_write_text, monochrome_to_unit, read_image, read_mask
from data_prep.phantoms.cxr import render_cxr
from data_prep.phantoms.layouts import _write_dicom


def test_real_chest_radiograph_dicom():
    """pydicom-data's CR chest film: MONOCHROME1, 15-bit, windowed."""
    path = get_testdata_file("RG1_UNCR.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (1955, 1841)
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    h, w = img.shape
    band = img[int(0.35 * h):int(0.55 * h)]
    mediastinum = band[:, int(0.45 * w):int(0.55 * w)].mean()
    lungs = np.r_[band[:, int(0.2 * w):int(0.32 * w)].ravel(), band[:, int(0.68 * w):int(0.8 * w)].ravel()].mean()
    assert lungs < mediastinum - 0.1, (lungs, mediastinum)  # lungs dark, mediastinum bright


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "mlut_18.dcm",
                                  "vlut_04.dcm", "MR_small_bigendian.dcm", "emri_small.dcm"])
def test_dicom_lookup_table_gives_the_figures_of_the_per_pixel_chain(name):
    """read_image runs pydicom's modality and VOI LUTs once per stored value and looks the frame
    up: exactly what running them over every pixel gives, for windowed MONOCHROME1/2 films,
    signed CT/MR (big-endian too), a modality LUT sequence and a VOI LUT sequence."""
    ds = pydicom.dcmread(get_testdata_file(name))
    arr = ds.pixel_array
    direct = monochrome_to_unit(arr, ds, lookup=False)
    looked_up = monochrome_to_unit(arr, ds)
    assert looked_up.dtype == direct.dtype == np.float32 and looked_up.shape == arr.shape
    np.testing.assert_array_equal(looked_up, direct)
    assert direct.max() > direct.min()  # a real image, not a constant one


def test_phantom_dicom_round_trip_all_variants(tmp_path):
    """MONOCHROME1 and rescale slope/intercept both undone: the image comes back."""
    img = render_cxr(0, (64, 64)).image
    seen = set()
    for s in range(40):
        rng = np.random.default_rng(s)
        path = tmp_path / f"{s}.dcm"
        extra = _write_dicom(path, img, f"k{s}", "p", rng)
        seen.add((extra["photometric"], extra["rescale_slope"]))
        back = read_image(path)
        assert np.abs(back - img).max() <= 2.5 / 4095, extra
    assert {("MONOCHROME1", 1.0), ("MONOCHROME2", 1.0), ("MONOCHROME2", 2.0)} <= seen


def test_rgb_and_16_bit_rasters(tmp_path):
    gray = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (16, 1))
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor((gray * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(tmp_path / "g16.png"), (gray * 65535).round().astype(np.uint16))
    cv2.imwrite(str(tmp_path / "rgb.jpeg"), cv2.cvtColor((gray * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR))
    assert np.abs(read_image(tmp_path / "rgb.png") - gray).max() < 1 / 255
    assert np.abs(read_image(tmp_path / "g16.png") - gray).max() < 1e-4
    assert read_image(tmp_path / "rgb.jpeg").ndim == 2


def test_errors_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((8, 8), 128, np.uint8))
    data = good.read_bytes()
    cases = {
        "trunc.png": (data[: len(data) // 2], "truncated PNG"),
        "zero.png": (b"", "empty file"),
        "garbage.png": (b"not an image at all" * 10 + b"IEND\xaeB`\x82", "not a valid PNG image"),
        "broken.png": (data[:8] + b"not an image at all" * 10 + b"IEND\xaeB`\x82", "could not decode"),
        "zero.dcm": (b"", "empty file"),
        "bad.dcm": (b"\0" * 128 + b"DICM" + b"\x01\x02" * 20, "DICOM"),
        "notes.txt": (b"hello", "unsupported image format"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageReadError, match=message) as e:
            read_image(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_dicom_without_pixels(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(ImageReadError, match="no pixel data") as e:
        read_image(tmp_path / "nopix.dcm")
    assert "nopix.dcm" in str(e.value)


def test_read_mask_union_and_checks(tmp_path):
    left, right = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
    left[2:10, 1:6], right[2:12, 9:15] = 255, 255
    cv2.imwrite(str(tmp_path / "l.png"), left)
    cv2.imwrite(str(tmp_path / "r.png"), right)
    union = read_mask([tmp_path / "l.png", tmp_path / "r.png"])
    assert union.dtype == np.uint8 and union.sum() == (left > 0).sum() + (right > 0).sum()
    cv2.imwrite(str(tmp_path / "small.png"), left[:8])
    with pytest.raises(ImageReadError, match="differs"):
        read_mask([tmp_path / "l.png", tmp_path / "small.png"])
    cv2.imwrite(str(tmp_path / "grey.png"), np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)))
    with pytest.raises(ImageReadError, match="not binary") as e:
        read_mask(tmp_path / "grey.png")
    assert "grey.png" in str(e.value)


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "first")
    atomic_write_text(tmp_path / "a.txt", "second")
    assert (tmp_path / "a.txt").read_text() == "second"
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d") as d:
            (d / "partial").write_text("x")
            raise RuntimeError("crash mid-way")
    assert not (tmp_path / "d").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporaries left
