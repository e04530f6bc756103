"""The one method vocabulary, :mod:`iif.methods` (issue 16, part 2).

The table must agree with what each place actually implements, read from those places (the loss registry's
keys, the adjuster kinds, the rows of :func:`iif.detection.use_margin`'s documented method table, the
bench's end-to-end rows), so a method added in one place without the table fails here; every accepted
spelling must build the same thing as the old one, checked against formulas written out below.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iif import methods
from iif.errors import IIFError
from iif.methods import METHODS, TASKS, WHEN, canonical_method, method_names, spelling

COUNTS = np.array([40, 6, 1])

# Written out here, not read from iif.methods: the spellings that existed before the table (issue 16).
OLD_SPELLINGS = {
    "loss": {"ce": "softmax", "iif": "iif", "iif_csl": "iif_csl", "balanced_softmax": "balanced_softmax",
             "logit_adjusted": "logit_adjustment", "ldam": "ldam", "cb_softmax": "cb_softmax",
             "cb_sigmoid": "cb_sigmoid", "cb_focal": "cb_focal", "cb_softmax_focal": "cb_softmax_focal",
             "focal": "focal", "seesaw": "seesaw"},
    "posthoc": {"iif": "iif", "la": "logit_adjustment", "taunorm": "taunorm", "none": "softmax"},
    "detection": {"softmax": "softmax", "iif": "iif", "balanced_softmax": "balanced_softmax",
                  "logit_adjustment": "logit_adjustment", "norcal": "norcal", "seesaw": "seesaw"},
}
NEW_ALIASES = {"softmax": "softmax", "la": "logit_adjustment", "logit_adjusted": "logit_adjustment",
               "logit_adjustment": "logit_adjustment", "ce": "softmax"}


# ---------------------------------------------------------------------------------------------- the table


def test_entries_are_frozen_and_names_unique():
    names = [m.name for m in METHODS]
    assert len(names) == len(set(names))
    for m in METHODS:
        assert set(m.tasks) <= set(TASKS) and m.tasks, m.name
        assert m.reference, m.name
        assert set(m.when) <= set(WHEN)
        assert bool(m.when) == ("detection" in m.tasks), m.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        METHODS[0].name = "x"
    # no spelling resolves to two methods within a task
    for task in TASKS:
        seen: dict[str, str] = {}
        for m in METHODS:
            if task in m.tasks:
                for s in m.accepts(task):
                    assert seen.setdefault(s, m.name) == m.name, (task, s)


@pytest.mark.parametrize("task", TASKS)
def test_every_old_spelling_and_alias_resolves_in_its_task(task):
    for old, canon in OLD_SPELLINGS[task].items():
        assert canonical_method(old, task) == canon, (task, old)
        assert spelling(canon, task) == old, (task, canon)  # each task's table still uses its old key
    for alias, canon in NEW_ALIASES.items():
        if canon in method_names(task):
            assert canonical_method(alias, task) == canon, (task, alias)
    for m in METHODS:
        for s in m.accepts(task) if task in m.tasks else ():
            assert canonical_method(s, task) == m.name


def test_detection_when_values():
    by_hand = {"softmax": set(WHEN), "iif": set(WHEN), "balanced_softmax": {"train"},
               "logit_adjustment": {"train", "test"}, "norcal": {"test"}, "seesaw": {"train"},
               "eqlv2": {"train"}}
    assert {m.name: set(m.when) for m in METHODS if "detection" in m.tasks} == by_hand
    assert WHEN == ("train_and_test", "train", "test")


@pytest.mark.parametrize("name,task,pieces", [
    ("iff", "loss", ["Unknown method 'iff' for classification losses", "softmax, iif, iif_csl", "ce=softmax",
                     "logit_adjusted=logit_adjustment", "Did you mean 'iif'?"]),
    ("focal", "detection", ["Unknown method 'focal' for detection margins", "one of the classification losses",
                            "softmax, iif, balanced_softmax, logit_adjustment, norcal, seesaw", "la=logit_adjustment"]),
    ("norcal", "posthoc", ["for classification post-hoc adjusters", "softmax, iif, logit_adjustment, taunorm",
                           "none=softmax"]),
    ("none", "loss", ["Unknown method 'none' for classification losses ('none' names 'softmax' only in "
                      "classification post-hoc adjusters; write 'softmax')"]),
    ("LA", "detection", ["Unknown method 'LA'"]),  # exact spelling: callers lower-case where they did before
    (None, None, ["Unknown method None;", "taunorm"]),
])
def test_unknown_or_wrong_task_names_give_one_line(name, task, pieces):
    with pytest.raises(IIFError) as info:
        canonical_method(name, task)
    msg = str(info.value)
    assert "\n" not in msg
    for p in pieces:
        assert p in msg, (p, msg)
    with pytest.raises(IIFError, match="Unknown task 'segmentation'"):
        canonical_method("iif", "segmentation")


def test_methods_imports_only_errors():
    src = open(methods.__file__).read()
    assert set(re.findall(r"^\s*(?:from|import) +([.\w]+)", src, re.M)) <= {"__future__", "difflib", "dataclasses",
                                                                         "typing", ".errors"}
    code = "import sys, json, iif.methods; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('iif', 'torch', 'numpy')))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not [m for m in json.loads(out.stdout) if m.startswith(("torch", "numpy"))]


# ---------------------------------------------------------------------------------------------- the places


def test_loss_registry_and_table_list_the_same_methods():
    from iif.losses.registry import LOSSES

    assert list(LOSSES) == [spelling(n, "loss") for n in method_names("loss")]


def test_adjuster_kinds_and_table_list_the_same_methods():
    from iif.train.strategies import ADJUSTER_KINDS

    assert set(ADJUSTER_KINDS) == {spelling(n, "posthoc") for n in method_names("posthoc")}


def test_detection_doc_table_and_method_table_agree():
    """The (method, when) rows of use_margin's documented table are what the method table allows."""
    from iif.detection import margins
    from iif.detection.margins import METHODS as DET

    rows = re.findall(r'^\| ``"(\w+)"`` \| (any|``"(\w+)"``)', margins.__doc__, re.M)
    documented: dict[str, set] = {}
    for method, when, quoted in rows:
        documented.setdefault(method, set()).update(WHEN if when == "any" else {quoted})
    assert documented == {m.name: set(m.when) for m in METHODS if "detection" in m.tasks}
    assert tuple(DET) == method_names("detection")


def test_bench_rows_name_table_methods():
    from iif.bench.rows import E2E_METHODS

    for _, loss, _ in E2E_METHODS:
        assert canonical_method(loss, "loss") in method_names("loss")


# ---------------------------------------------------------------------------------------------- same behaviour


def test_loss_aliases_build_the_old_losses():
    from iif.losses import build_loss

    z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2]])
    y = torch.tensor([1, 2])
    log_p = torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))
    want = F.cross_entropy(z + log_p, y)  # Menon et al.'s logit-adjusted loss at tau = 1
    for name in ("logit_adjusted", "logit_adjustment", "la", "LA"):
        assert torch.allclose(build_loss(name, COUNTS)(z, y), want, atol=1e-6), name
    for name in ("ce", "softmax"):
        assert torch.allclose(build_loss(name)(z, y), F.cross_entropy(z, y)), name
    with pytest.raises(IIFError, match="Unknown loss 'iff' for classification losses.*Did you mean 'iif'"):
        build_loss("iff", COUNTS)
    with pytest.raises(IIFError, match="Unknown loss 'norcal'.*one of the detection margins"):
        build_loss("norcal", COUNTS)


def test_adjust_kinds_accept_logit_adjustment():
    from iif.train.strategies import build_adjuster, parse_adjuster

    assert parse_adjuster("logit_adjustment:0.5") == ("la", "0.5") == parse_adjuster("la:0.5")
    assert parse_adjuster("softmax") == ("none", "") == parse_adjuster("none")
    z = torch.tensor([[2.0, -1.0, 0.5]])
    want = z - 0.5 * torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))
    got = build_adjuster("logit_adjustment:0.5", COUNTS)(None, z)
    assert torch.allclose(got.float(), want, atol=1e-6)
    with pytest.raises(IIFError, match=r"unknown adjuster 'logit_adjustmnt:1'.*Did you mean 'logit_adjustment'"):
        parse_adjuster("logit_adjustmnt:1")
    with pytest.raises(IIFError, match="unknown adjuster 'norcal:1'"):
        parse_adjuster("norcal:1")


def test_config_posthoc_adjusters_accept_logit_adjustment():
    from iif.train.config_checks import _check_posthoc
    from iif.train.config_schema import PosthocConfig

    _check_posthoc(PosthocConfig(adjusters=["logit_adjustment:1.0", "la:2", "iif:smooth", "none"]))
    with pytest.raises(IIFError, match="unknown adjuster"):
        _check_posthoc(PosthocConfig(adjusters=["logit_adjusment:1.0"]))


def test_use_margin_accepts_la_aliases(tiny_rcnn):
    pytest.importorskip("torchvision")
    from iif.detection import use_margin

    rcnn = tiny_rcnn
    x = torch.randn(5, 32)
    z_plain = rcnn().roi_heads.box_predictor(x)[0]
    p = torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32)
    offset = torch.cat([torch.zeros(1), -torch.log(3 * p)])  # Bayes form at tau = 1: a_c = -ln(C p_c)
    for name in ("logit_adjustment", "la", "logit_adjusted"):
        m = use_margin(rcnn(), name, COUNTS, when="test").eval()
        pred = m.roi_heads.box_predictor
        assert pred.method == "logit_adjustment", name
        assert torch.allclose(pred(x)[0], z_plain + offset, atol=1e-5), name
    for method in method_names("detection"):  # every method of the table is one use_margin builds
        for when in WHEN:
            if when in methods.get_method(method).when:
                use_margin(rcnn(), method, COUNTS, when=when)
            else:
                with pytest.raises(IIFError, match="does not take when|Unknown when"):
                    use_margin(rcnn(), method, COUNTS, when=when)
    with pytest.raises(IIFError, match="Unknown method 'focal' for detection margins"):
        use_margin(rcnn(), "focal", COUNTS)
