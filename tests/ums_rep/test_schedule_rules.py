"""The plateau rule's named options: when a cut is due (``cut_rule``), and that UMS-Rep's
fine-tuning keeps its rule (cut after P bad epochs, the unweighted sum, no optimizer reset) while
MT-UNet asks for the authors' public code's (mt_unet.schedule)."""
import pytest

from ums_rep.schedule import PlateauSchedule
from ums_rep.strategies import FitConfig


def _cuts(cut_rule: str, values, patience: int = 2) -> list:
    s = PlateauSchedule(lr=1.0, patience=patience, cut_rule=cut_rule)
    return [e for e, v in enumerate(values) if s.update(e, v)["cut"]]


def test_exceed_cuts_on_the_p_plus_first_bad_epoch_reach_on_the_pth():
    values = [1.0] + [2.0] * 7  # epoch 0 is the best; every later epoch is a bad one
    # P = 2: PyTorch's ReduceLROnPlateau (num_bad_epochs > patience) cuts on the third bad epoch,
    # and counts again from 0 after a cut
    assert _cuts("exceed", values) == [3, 6]
    assert _cuts("reach", values) == [2, 4, 6]
    # an improvement starts the count again
    assert _cuts("exceed", [1.0, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0]) == [6]
    with pytest.raises(ValueError, match="cut_rule"):
        PlateauSchedule(lr=1.0, cut_rule="later")


def test_ums_rep_keeps_its_rule_by_default():
    c = FitConfig()
    assert (c.lr_cut_rule, c.monitor, c.reset_optimizer, c.reset_to_best) == ("reach", "sum", False, False)
    assert PlateauSchedule(lr=1.0).cut_rule == "reach"
