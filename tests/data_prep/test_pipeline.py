"""tf.data pipelines from a prepared folder."""
import numpy as np
import pandas as pd
import pytest

from data_prep.pipeline import load_prepared, make_dataset
from data_prep.preparation import prepare
from data_prep.splits import LeakageError


@pytest.fixture(scope="module")
def prepared(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe")
    prepare("shenzhen", phantom_root / "shenzhen", out / "shenzhen", size=(32, 32), progress=False)
    prepare("egd", phantom_root / "egd", out / "egd", shape=(40, 26), progress=False)
    return out


def test_images_labels_and_masks(prepared):
    p = load_prepared(prepared / "shenzhen")
    rows = p.rows("train")
    rows = rows[rows["mask"].notna()]
    ds = make_dataset(p, rows, label_column="label", classes=("normal", "tb"), mask=True, batch_size=4)
    seen = 0
    for x, y in ds:
        assert x.shape[1:] == (32, 32, 1) and y["mask"].shape[1:] == (32, 32, 1)
        assert set(np.unique(y["mask"].numpy())) <= {0.0, 1.0}
        labels = rows.loc[y["index"].numpy(), "label"].map({"normal": 0, "tb": 1}).to_numpy()
        np.testing.assert_array_equal(y["label"].numpy().argmax(1), labels)
        seen += len(x)
    assert seen == len(rows)
    raw = make_dataset(p, rows, normalize=False, batch_size=len(rows))
    xn, _ = next(iter(ds.unbatch().batch(len(rows))))
    xr, _ = next(iter(raw))
    np.testing.assert_allclose(xn.numpy(), (xr.numpy() - p.normalizer.mean) / p.normalizer.std, atol=1e-5)


def test_saliency_sums_to_one_and_resize(prepared):
    p = load_prepared(prepared / "egd")
    ds = make_dataset(p, p.rows(), label_column="label", classes=("Normal", "CHF", "pneumonia"),
                      saliency=True, image_size=(20, 13), batch_size=8)
    x, y = next(iter(ds))
    assert x.shape[1:] == (20, 13, 1) and y["saliency"].shape[1:] == (20, 13, 1)
    np.testing.assert_allclose(y["saliency"].numpy().sum(axis=(1, 2, 3)), 1.0, atol=1e-5)


def test_shuffle_is_seeded(prepared):
    p = load_prepared(prepared / "shenzhen")
    order = [next(iter(make_dataset(p, p.rows(), shuffle=True, seed=s, batch_size=30)))[1]["index"].numpy()
             for s in (1, 1, 2)]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2])


def test_requests_that_cannot_be_met(prepared):
    p = load_prepared(prepared / "shenzhen")
    with pytest.raises(ValueError, match="have no mask"):
        make_dataset(p, p.rows(), mask=True)
    with pytest.raises(ValueError, match="not among classes"):
        make_dataset(p, p.rows(), label_column="label", classes=("normal",))


def test_leaky_manifest_is_refused(prepared, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(prepared / "shenzhen", bad)
    m = pd.read_csv(bad / "manifest.csv")
    i = m.index[m.split == "test"][0]
    extra = m.loc[[i]].assign(split="train")
    pd.concat([m, extra]).to_csv(bad / "manifest.csv", index=False)
    with pytest.raises(LeakageError, match=str(m.loc[i, "patient_id"])):
        load_prepared(bad)
    with pytest.raises(FileNotFoundError, match="run `python -m data_prep.prepare`"):
        load_prepared(tmp_path / "nothing")


def test_a_cache_that_would_not_fit_streams_the_same_elements(prepared, monkeypatch, caplog):
    """Over MEMORY_CACHE_FRACTION of the available memory, the pipeline streams (no cache) and
    shuffles file names before decoding: the same images, in the same shuffled order."""
    import logging
    from data_prep import pipeline
    assert pipeline.cache_bytes(100, (256, 256), planes=2) == 100 * 256 * 256 * 4 * 2
    assert pipeline.memory_cache_fits(10, available=100) and not pipeline.memory_cache_fits(30, available=100)
    p = load_prepared(prepared / "shenzhen")
    rows = p.rows("train")
    kw = dict(label_column="label", classes=("normal", "tb"), batch_size=4, shuffle=True, seed=3)
    cached = [(x.numpy(), y["index"].numpy()) for x, y in make_dataset(p, rows, **kw)]
    monkeypatch.setattr(pipeline, "available_memory", lambda: 1000)  # a machine with no room to cache
    with caplog.at_level(logging.INFO, logger="data_prep.pipeline"):
        ds = make_dataset(p, rows, **kw)
    assert "streaming them from disk" in caplog.text
    monkeypatch.undo()
    assert b"CacheDataset" in make_dataset(p, rows, **kw)._as_serialized_graph().numpy()  # the check can fail
    assert b"CacheDataset" not in ds._as_serialized_graph().numpy()
    streamed = [(x.numpy(), y["index"].numpy()) for x, y in ds]
    for (xc, ic), (xs, is_) in zip(cached, streamed, strict=True):
        np.testing.assert_array_equal(ic, is_)
        np.testing.assert_allclose(xc, xs)
