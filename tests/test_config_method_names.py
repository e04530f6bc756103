"""Config keys take a method's canonical name and its aliases, as the command line does (issue 16: one method
vocabulary): each resolves to the spelling its task's own table uses; unknown names keep the one-line refusal."""

import pytest

from iif.detection.config import load_detection_config
from iif.errors import IIFError
from iif.train.config import load_config


@pytest.mark.parametrize("given, stored", [
    ("logit_adjustment", "logit_adjusted"), ("la", "logit_adjusted"), ("logit_adjusted", "logit_adjusted"),
    ("LA", "logit_adjusted"), ("softmax", "ce"), ("ce", "ce"), ("iif", "iif"), ("balanced_softmax", "balanced_softmax"),
])
def test_classification_loss_names(given, stored):
    assert load_config("digits_lt_e2e", [f"loss.name={given}"]).loss.name == stored
    assert load_config("digits_lt_decoupled", [f"decoupled.loss={given}"]).decoupled.loss == stored


@pytest.mark.parametrize("given, stored", [
    ("la", "logit_adjustment"), ("logit_adjusted", "logit_adjustment"), ("logit_adjustment", "logit_adjustment"),
    ("ce", "softmax"), ("softmax", "softmax"), ("iif", "iif"),
])
def test_detection_margin_names(given, stored):
    assert load_detection_config("det_bench_softmax", [f"margin.method={given}"]).margin.method == stored


def test_unknown_and_wrong_task_names_are_still_refused_in_one_line():
    with pytest.raises(IIFError, match=r"config key 'loss.name' is 'bogus'; use one of ce, iif"):
        load_config("digits_lt_e2e", ["loss.name=bogus"])
    # norcal is a detection margin only: as a classification loss it is refused, naming the loss key
    with pytest.raises(IIFError, match=r"config key 'loss.name' is 'norcal'"):
        load_config("digits_lt_e2e", ["loss.name=norcal"])
    # ldam is a classification loss only
    with pytest.raises(IIFError, match=r"config key 'margin.method' is 'ldam'"):
        load_detection_config("det_bench_softmax", ["margin.method=ldam"])
