"""One preset table per paper (``ums_rep.presets``): the same names in every entry, one override
rule, and every command reading its values from there."""
import pytest

from ums_rep import finetune, presets, pretrain, scan
from mt_unet import reporting as mt_report
from mt_unet.presets import MT_UNET
from ums_rep.presets import UMS_REP


def test_every_entry_of_a_stage_has_the_same_keys():
    for stage in ("pretrain", "finetune", "scan"):
        keys = {name: set(UMS_REP[name][stage]) for name in UMS_REP}
        assert len({frozenset(k) for k in keys.values()}) == 1, (stage, keys)
    assert len({frozenset(v) for v in MT_UNET.values()}) == 1
    # the names the table's docstring defines, not the old n/phantom_n, stop/patience, image/shape
    for entry in [*MT_UNET.values(), *(e for p in UMS_REP.values() for e in p.values())]:
        assert not {"phantom_n", "shape", "patience"} & set(entry)


def test_an_override_replaces_only_what_is_given():
    base = UMS_REP["quick"]["finetune"]
    p = presets.preset("quick", "finetune", epochs=3, augment=False, batch=None)
    assert p["epochs"] == 3 and p["augment"] is False and p["batch"] == base["batch"]
    assert base["epochs"] == 30 and base["augment"] is True  # the table itself is untouched
    m = presets.preset("tiny", "mt_unet", image=(32, 24), lr_patience=None)
    assert m["image"] == (32, 24) and m["lr_patience"] == MT_UNET["tiny"]["lr_patience"]
    with pytest.raises(KeyError, match="epoch"):
        presets.preset("tiny", "pretrain", epoch=3)  # a misspelt override is an error, not ignored
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        presets.preset("fast", "finetune")


def test_the_commands_read_the_ums_rep_table_itself(monkeypatch):
    """UMS_REP is the one table: an entry replaced in it (as a test or a notebook shortens a run)
    is what preset() gives, not the entry the table held at import."""
    monkeypatch.setitem(UMS_REP["quick"], "finetune", {**UMS_REP["quick"]["finetune"], "epochs": 4})
    assert presets.preset("quick", "finetune")["epochs"] == 4
    assert dict(presets.STAGES["finetune"])["quick"]["epochs"] == 4


def test_the_commands_offer_the_presets_of_the_table():
    for module in (pretrain, finetune, scan):
        action = next(a for a in module.build_parser()._actions if a.dest == "preset")
        assert tuple(action.choices) == tuple(UMS_REP)


@pytest.mark.parametrize("key", ["image", "shape"])
def test_the_report_reads_the_input_size_under_the_new_and_the_old_name(key, tmp_path):
    """Runs written before the preset tables recorded MT-UNet's input as config["shape"]."""
    entry = {"label": "MT-UNet (MTL3)", "metrics": {"kld": 0.5}, "std": {}, "train_seconds": 1.0,
             "trainable_params": 10}
    body = {"command": "mt_unet.train --model mtunet", "config": {key: [64, 48], "preset": "tiny", "seeds": 1,
                                                                   "data": "phantom"}, "tasks": {"mt": entry}}
    assert "input 64×48" in mt_report.tables([(tmp_path, body)])[0]


def test_an_epochs_option_of_zero_keeps_the_presets_epochs():
    """As before the preset tables: ``--epochs 0`` means the preset's epochs, not a run of none."""
    from ums_rep import experiment
    args = experiment.FinetuneOptions(preset="tiny", epochs=0)
    assert experiment.settings(args).preset["epochs"] == UMS_REP["tiny"]["finetune"]["epochs"]
    args.epochs = 5
    assert experiment.settings(args).preset["epochs"] == 5
