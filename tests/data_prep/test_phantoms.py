"""Phantom datasets: measurable realism, the published layouts, determinism and the CLI."""
import hashlib
import shutil

import cv2

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pydicom.data import get_testdata_file
from scipy import ndimage

from data_prep.datasets import load
from data_prep.io import read_mask
from data_prep.phantoms.__main__ import main
from data_prep.phantoms.cxr import FINDINGS, render_cxr
from data_prep.phantoms.doppler import render_doppler
from data_prep.egd import Display
from data_prep.phantoms.gaze import simulate_fixations
from data_prep.phantoms.layouts import LAYOUTS, TRUTH, generate
from data_prep.phantoms.realism import spectral_slope
from data_prep.transforms import resize_mask

SHAPE = (128, 128)


def _measured_ctr(ph):
    """Cardiothoracic ratio as a reader measures it: heart width over inner thoracic width."""
    hx = np.nonzero(ph.heart.any(axis=0))[0]
    lx = np.nonzero(ph.lungs.any(axis=0))[0]
    return (hx.max() - hx.min() + 1) / (lx.max() - lx.min() + 1)


def test_lung_area_fraction_is_plausible():
    # published PA lung masks cover 0.31/0.36/0.43 (quartiles) of a 256² image; the old bound
    # max < 0.40 encoded the former phantoms' too-small lungs
    fractions = [render_cxr(s, SHAPE, FINDINGS[s % 5]).lungs.mean() for s in range(25)]
    assert min(fractions) > 0.20 and max(fractions) < 0.50, fractions
    assert np.std(fractions) > 0.01  # lung size varies between patients


@pytest.mark.parametrize("layout", ["shenzhen", "montgomery"])
def test_lung_masks_match_published_statistics(layout, tmp_path):
    """Masks read through the loaders and resized to 256² as ``prepare`` does: area fraction
    quartiles in the band of real PA lung masks (0.31/0.36/0.43 for the 517 v7labs masks),
    and one region per lung — no specks — whichever connectivity a reader counts with."""
    root = generate(layout, tmp_path / layout, n=200, seed=0, size=256, progress=False)
    manifest = load(layout, root)
    masks = [resize_mask(read_mask(paths), (256, 256)) for paths in manifest.mask_paths if len(paths)]
    assert len(masks) >= 150
    fractions = np.array([m.mean() for m in masks])
    q25, q50, q75 = np.quantile(fractions, [0.25, 0.5, 0.75])
    assert q25 >= 0.25 and 0.30 <= q50 <= 0.40 and q75 <= 0.45, (q25, q50, q75)
    four = np.array([ndimage.label(m)[1] for m in masks])
    eight = np.array([ndimage.label(m, np.ones((3, 3)))[1] for m in masks])
    assert np.mean(four == 2) >= 0.95 and np.mean(eight == 2) >= 0.95, (np.bincount(four), np.bincount(eight))


def _lung_geometry(ph):
    """Per lung: (lowest row, lowest row of the lateral third, of the medial third, of the
    middle), and the image's top and bottom lung rows."""
    out = []
    for m, lateral_is_left in ((ph.lung_right, True), (ph.lung_left, False)):
        cols = np.nonzero(m.any(axis=0))[0]
        thirds = np.array_split(cols if lateral_is_left else cols[::-1], 3)
        bottom = [np.nonzero(m[:, c].any(axis=1))[0].max() for c in thirds]
        out.append(bottom)
    return out


def test_costophrenic_angles_domes_and_abdomen():
    """The lowest point of each lung is its lateral costophrenic angle, the domes rise medially
    (the right one a little higher), and below the lungs lies a modest strip of upper abdomen."""
    cp_lowest, right_higher, strips, widths = [], [], [], []
    for s in range(40):
        ph = render_cxr(s, (256, 256), "normal")
        (r_lat, r_mid, r_med), (l_lat, l_mid, l_med) = _lung_geometry(ph)
        cp_lowest += [r_lat > r_mid, l_lat > l_mid]
        right_higher.append(r_mid < l_mid)
        rows = np.nonzero(ph.lungs.any(axis=1))[0]
        strips.append(1 - (rows.max() + 1) / 256)
        cols = np.nonzero(ph.lungs.any(axis=0))[0]
        widths.append((cols.max() - cols.min() + 1) / 256)
    assert np.mean(cp_lowest) >= 0.9
    assert np.mean(right_higher) >= 0.7
    assert 0.1 <= np.median(strips) <= 0.25 and min(strips) > 0.03, strips
    assert 0.75 <= np.median(widths) <= 0.95, widths  # lung fields span most of the film's width


def test_both_lungs_present_and_separate():
    ph = render_cxr(1, SHAPE)
    assert ph.lung_right.sum() > 0.05 * ph.lung_right.size and ph.lung_left.sum() > 0.05 * ph.lung_left.size
    assert not (ph.lung_right & ph.lung_left).any()
    # patient's right lung is on the image's left in a PA view
    assert np.nonzero(ph.lung_right)[1].mean() < np.nonzero(ph.lung_left)[1].mean()
    assert not (ph.heart & ph.lungs).any()


def test_cardiothoracic_ratio_separates_normal_from_enlarged_heart():
    normal = [_measured_ctr(render_cxr(s, SHAPE, "normal")) for s in range(20)]
    enlarged = [_measured_ctr(render_cxr(100 + s, SHAPE, "enlarged_heart")) for s in range(20)]
    assert np.median(normal) < 0.5 < np.median(enlarged)
    auc = roc_auc_score([0] * 20 + [1] * 20, normal + enlarged)
    assert auc > 0.9, auc
    # adult PA films: normal CTR about 0.44 ± 0.04 and always below 0.5, cardiomegaly above it
    drawn = [render_cxr(s, SHAPE, "normal").ctr for s in range(60)]
    assert max(drawn) < 0.5 and 0.41 < np.median(drawn) < 0.47 and np.std(drawn) > 0.02
    assert min(render_cxr(s, SHAPE, "enlarged_heart").ctr for s in range(20)) > 0.5
    assert max(abs(a - b) for a, b in zip(normal, drawn)) < 0.03  # the mask measures what was drawn


@pytest.mark.parametrize("finding", ["tb", "bacterial", "viral"])
def test_findings_change_intensity_inside_the_lungs(finding):
    """Same seed = same patient and noise; only the finding differs."""
    mean_gain, texture_gain = [], []
    for s in range(12):
        base = render_cxr(s, SHAPE, "normal")
        ill = render_cxr(s, SHAPE, finding, severity=0.8)
        lungs = base.lungs.astype(bool)
        mean_gain.append(ill.image[lungs].mean() - base.image[lungs].mean())
        texture_gain.append(ill.image[lungs].std() - base.image[lungs].std())
    assert np.mean(np.array(mean_gain) > 0) >= 0.9, mean_gain
    if finding == "viral":  # a reticular pattern adds texture
        assert np.median(mean_gain) > 0.01
    else:
        assert np.median(mean_gain) > 0.015
        assert np.median(texture_gain) > 0  # a focal opacity widens the intensity spread


def test_severity_controls_how_visible_a_finding_is():
    weak = [render_cxr(s, SHAPE, "bacterial", severity=0.05).image.mean() for s in range(8)]
    strong = [render_cxr(s, SHAPE, "bacterial", severity=1.0).image.mean() for s in range(8)]
    assert np.mean(np.array(strong) > np.array(weak)) >= 0.9


def test_tr_peak_velocity_exceeds_mv_and_ma_is_lowest():
    def peak(flow, s):
        ph = render_doppler(s, (128, 128), flow)
        rows = np.nonzero(ph.envelope_mask)[0]
        return np.abs(rows - ph.baseline_row).max() / ph.px_per_mps  # measured from the mask, m/s

    tr = [peak("TR", s) for s in range(10)]
    mv = [peak("MV", s) for s in range(10)]
    ma = [peak("MA", s) for s in range(10)]
    assert min(tr) > max(mv) and max(ma) < min(mv), (tr, mv, ma)
    assert 2.0 < np.median(tr) < 4.5 and 0.4 < np.median(mv) < 1.3 and np.median(ma) < 0.2


def test_doppler_flow_direction():
    for s in range(5):
        mv, tr = render_doppler(s, (96, 96), "MV"), render_doppler(s, (96, 96), "TR")
        assert mv.peak_velocity > 0 > tr.peak_velocity  # inflow towards, regurgitation away
        assert np.nonzero(mv.envelope_mask)[0].max() <= mv.baseline_row  # above the baseline
        assert np.nonzero(tr.envelope_mask)[0].min() >= tr.baseline_row


def test_low_quality_strips_differ_measurably():
    """A quality-blind statistic (background brightness or envelope contrast) shifts with defects."""
    def contrast(ph):
        inside = ph.image[ph.envelope_mask.astype(bool)].mean()
        outside = ph.image[: int(0.86 * ph.image.shape[0])][~ph.envelope_mask[: int(0.86 * ph.image.shape[0])].astype(bool)].mean()
        return inside - outside

    good = [contrast(render_doppler(s, (96, 96), "MV", "good")) for s in range(15)]
    low = [contrast(render_doppler(s, (96, 96), "MV", "low")) for s in range(15)]
    assert np.median(low) < np.median(good)


@pytest.mark.parametrize("label,finding", [("pneumonia", "bacterial"), ("CHF", "enlarged_heart")])
def test_gaze_density_is_higher_on_findings(label, finding):
    ratios = []
    for s in range(10):
        ph = render_cxr(s, (154, 128), finding, severity=0.8)
        target = ph.finding_mask.astype(bool)
        rest = (ph.lungs.astype(bool) | ph.heart.astype(bool)) & ~target
        regions = {"lungs": ph.lungs, "heart": ph.heart, "mediastinum": np.zeros_like(ph.heart),
                   "finding": ph.finding_mask}
        fix = simulate_fixations(s, regions, label, ph.image.shape)
        on = fix["x"] >= 0
        xs, ys = fix["x"][on].astype(int), fix["y"][on].astype(int)
        hits_target, hits_rest = target[ys, xs].sum(), rest[ys, xs].sum()
        ratios.append((hits_target / target.sum()) / max(hits_rest / rest.sum(), 1e-9))
    assert np.median(ratios) > 2.0, ratios


def test_gaze_jitter_is_about_one_degree():
    d = Display((3056, 2544))  # a MIMIC-CXR image on the reading-room screen
    assert 100 < d.px_per_degree < 150  # ≈127 image pixels, ≈4% of the height
    fx, fy = d.to_screen_fraction(np.array([0.0, 2544.0]), np.array([0.0, 3056.0]))
    assert 0 <= fx[0] < fx[1] <= 1 and fy[0] == pytest.approx(0) and fy[1] == pytest.approx(1)


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_gives_identical_bytes(layout, tmp_path):
    a = generate(layout, tmp_path / "a", n=6, seed=5, size=48, progress=False)
    b = generate(layout, tmp_path / "b", n=6, seed=5, size=48, progress=False)
    c = generate(layout, tmp_path / "c", n=6, seed=6, size=48, progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_parallel_generation_matches_serial(tmp_path):
    a = generate("doppler", tmp_path / "serial", n=50, seed=2, size=48, workers=1, progress=False)
    b = generate("doppler", tmp_path / "parallel", n=50, seed=2, size=48, workers=2, progress=False)
    assert _digest(a) == _digest(b)


def test_rsna_layout(phantom_root):
    root = phantom_root / "rsna"
    labels = pd.read_csv(root / "stage_2_train_labels.csv")
    info = pd.read_csv(root / "stage_2_detailed_class_info.csv")
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert len(info) == len(labels) and set(info["class"]) <= {
        "Lung Opacity", "No Lung Opacity / Not Normal", "Normal"}
    assert labels.loc[labels.Target == 0, ["x", "y", "width", "height"]].isna().all().all()
    assert labels.loc[labels.Target == 1, "width"].gt(0).all()
    for pid in labels.patientId.unique():
        assert (root / "stage_2_train_images" / f"{pid}.dcm").is_file()
    truth = pd.read_csv(root / TRUTH)
    assert {"MONOCHROME1", "MONOCHROME2"} <= set(truth.photometric) or len(truth) < 20


def test_shenzhen_and_montgomery_layouts(phantom_root):
    sz = phantom_root / "shenzhen"
    images = sorted((sz / "CXR_png").glob("CHNCXR_*_[01].png"))
    masks = sorted((sz / "mask").glob("*_mask.png"))
    assert len(images) == 30 and 0 < len(masks) < 30
    assert all((sz / "ClinicalReadings" / (p.stem + ".txt")).is_file() for p in images)
    mg = phantom_root / "montgomery"
    for p in (mg / "CXR_png").glob("MCUCXR_*.png"):
        assert (mg / "ManualMask" / "leftMask" / p.name).is_file()
        assert (mg / "ManualMask" / "rightMask" / p.name).is_file()


def test_kermany_layout(phantom_root):
    root = phantom_root / "kermany" / "chest_xray"
    files = list(root.rglob("*.jpeg"))
    assert {p.parent.parent.name for p in files} == {"train", "val", "test"}
    names = [p.name for p in files]
    assert any("_bacteria_" in n for n in names) and any("_virus_" in n for n in names)
    assert any(n.startswith("IM-") or n.startswith("NORMAL2-IM-") for n in names)
    persons = {(p.parent.parent.name, n.split("_")[0]) for p, n in zip(files, names) if n.startswith("person")}
    per_split = {}
    for split, person in persons:
        per_split.setdefault(person, set()).add(split)
    assert any(len(s) > 1 for s in per_split.values())  # numbering restarts in each split


def test_egd_layout(phantom_root):
    root = phantom_root / "egd"
    master = pd.read_csv(root / "master_sheet.csv")
    assert {"dicom_id", "path", "patient_id", "Normal", "CHF", "pneumonia"} <= set(master.columns)
    assert (master[["Normal", "CHF", "pneumonia"]].sum(axis=1) == 1).all()
    assert all((root / p).is_file() for p in master.path)
    fix = pd.read_csv(root / "fixations.csv")
    raw = pd.read_csv(root / "eye_gaze.csv")
    assert "Time (in secs)" in fix.columns and "TIME(in secs)" in raw.columns  # both headers occur
    assert set(fix.DICOM_ID) == set(master.dicom_id)
    assert (fix.X_ORIGINAL == -1).any()  # some gaze falls off the image
    assert len(raw) > 5 * len(fix)


def test_doppler_layout(phantom_root):
    root = phantom_root / "doppler"
    m = pd.read_csv(root / "manifest.csv")
    assert list(m.columns) == ["path", "patient_id", "flow_type", "quality", "mask_path"]
    assert set(m.flow_type) <= {"MV", "MA", "TR"}
    assert 0 < m.quality.notna().sum() < len(m)  # quality labelled for a subset only
    assert m.patient_id.value_counts().max() > 1  # several strips per patient
    assert all((root / p).is_file() for p in m.path) and all((root / p).is_file() for p in m.mask_path)


def test_cli_writes_layout_and_sheet(tmp_path):
    assert main(["montgomery", "--out", str(tmp_path / "mg"), "--n", "4", "--size", "48"]) == 0
    assert len(list((tmp_path / "mg" / "CXR_png").glob("*.png"))) == 4
    assert main(["sheet", "--out", str(tmp_path / "sheet.png"), "--size", "64"]) == 0
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectral_slope_recovers_a_power_law():
    """The realism statistic: β of P(f) ∝ f^-β, on noise synthesised with a known β."""
    n = 256
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij"))
    f[0, 0] = 1.0
    rng = np.random.default_rng(0)
    for beta in (2.0, 3.0):
        spectrum = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) * f ** (-beta / 2)
        img = np.real(np.fft.ifft2(spectrum))
        assert spectral_slope((img - img.min()) / np.ptp(img)) == pytest.approx(beta, abs=0.25)


def _table(text):
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_realism_compares_phantoms_with_a_folder_of_real_images(tmp_path):
    real, masks, out = tmp_path / "real", tmp_path / "masks", tmp_path / "out"
    real.mkdir()
    masks.mkdir()
    shutil.copy(get_testdata_file("RG1_UNCR.dcm"), real / "RG1_UNCR.dcm")  # a real PA film, no mask
    for s in range(2):  # two films with lung masks named as Shenzhen names them
        ph = render_cxr(500 + s, (300, 280))
        cv2.imwrite(str(real / f"film{s}.png"), np.round(ph.image * 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"film{s}_mask.png"), ph.lungs * 255)
    assert main(["realism", "--real", str(real), "--masks", str(masks), "--n", "6", "--out", str(out)]) == 0
    table = _table((out / "realism.md").read_text())
    assert table["statistic"] == ["phantoms", "real", "published PA masks"]
    assert table["images"][:2] == ["6", "3"] and table["masks"][:2] == ["6", "2"]
    assert table["exactly two components"] == ["1.000", "1.000", "0.990"]
    assert 0.25 < float(table["lung area q50"][1]) < 0.45
    assert 2.0 < float(table["spectral slope β (mean)"][1]) < 4.5
    assert float(table["histogram JS divergence (bits)"][0]) > 0
    assert (out / "realism.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["realism", "--real", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1
    with pytest.raises(SystemExit) as e:
        main(["realism", "--out", str(tmp_path / "o3")])
    assert e.value.code == 2


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nosuchlayout", "--out", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n=1"):
        generate("rsna", tmp_path / "x", n=1)


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate("doppler", tmp_path / "out", n=4, size=48, progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
