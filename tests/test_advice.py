"""iif.train.advice: loader workers, the end-to-end-IIF-on-a-small-set and underfit warnings."""

from types import SimpleNamespace

import pytest

from iif.train import advice
from iif.train.config import load_config


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(advice, "_said", set())


def test_loader_workers_capped_by_cpus_and_zero_for_small_sets():
    assert advice.loader_workers(8, 1999, cpus=2) == 0
    assert advice.loader_workers(8, 2000, cpus=2) == 2
    assert advice.loader_workers(1, 50_000, cpus=16) == 1
    assert advice.loader_workers(0, 50_000, cpus=16) == 0


def test_underfit_threshold_is_chance_plus_a_quarter_of_the_way_to_100():
    # 10 classes: 10 + 0.25 * 90 = 32.5; 100 classes: 1 + 0.25 * 99 = 25.75
    assert advice.underfit_warning(32.4, 10) is not None and advice.underfit_warning(32.5, 10) is None
    assert advice.underfit_warning(25.7, 100) is not None and advice.underfit_warning(25.75, 100) is None
    assert "24.0% top-1 on validation (chance 10.0%, advised at least 32.5%)" in advice.underfit_warning(24, 10)
    assert advice.underfit_warning(None, 10) is None


def test_e2e_iif_on_a_small_set_warns_once_on_stderr(capsys):
    cfg = load_config("folder_e2e")
    splits = SimpleNamespace(train=SimpleNamespace(targets=[0] * 290, notes=["folder x: images are 8x8"]))
    first = advice.check_config_advice(cfg, splits)
    again = advice.check_config_advice(cfg, splits)
    err = capsys.readouterr().err.splitlines()
    assert first == again and len(first) == 1 and "290 images < 5000" in first[0]
    assert err == ["iif: folder x: images are 8x8", f"iif: warning: {first[0]}"]  # each line once
    assert advice.check_config_advice(load_config("folder"), splits) == []  # decoupled with a CE stage 1
    big = SimpleNamespace(train=SimpleNamespace(targets=[0] * 5000))
    assert advice.check_config_advice(cfg, big) == []
    iif_stage1 = load_config("folder", ["loss.name=iif"])
    assert len(advice.check_config_advice(iif_stage1, splits)) == 1


def test_backbone_advice_reads_the_selection_val_score(capsys):
    sel = {"selection": {"val_score": 20.0, "selected_on": "val class_avg of raw logits", "split": "test"}}
    out = advice.check_backbone_advice({"raw": {"top1": 90.0, **sel}}, 10)
    assert len(out) == 1 and "20.0% class-average accuracy of raw logits on validation" in out[0]
    assert advice.check_backbone_advice({"raw": {"top1": 20.0, **sel}}, 10, loss="iif") == []
    assert advice.check_backbone_advice({"raw": {"top1": 20.0, **sel}}, 10, recipe=False) == []
    no_val = {"raw": {"top1": 12.0, "selection": {"val_score": None, "split": "test"}}}
    assert "12.0% top-1 on test" in advice.check_backbone_advice(no_val, 10)[0]
    assert advice.check_backbone_advice({"raw": {"top1": 80.0, "selection": {"val_score": 70.0}}}, 10) == []


def test_no_recipe_advice_for_runs_without_a_folder(capsys):
    cfg = load_config("folder_e2e")
    splits = SimpleNamespace(train=SimpleNamespace(targets=[0] * 290, notes=["a note"]))
    assert advice.check_config_advice(cfg, splits, recipe=False) == []
    assert capsys.readouterr().err == "iif: a note\n"  # the data's notes still print


def test_only_rank_0_prints(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert advice.advise("x") == "x" and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    advice.advise("y")
    assert capsys.readouterr().err == "iif: warning: y\n"
