"""``iif det-bench`` end to end on a tiny benchmark (iif.detection.bench, iif.cli.det_bench)."""

import importlib.util
import json

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")
# Looked up, not imported: importing tidecv (seaborn, pandas) costs ~1 CPU-s at collection, in every worker.
if importlib.util.find_spec("tidecv") is None:
    pytest.skip("tidecv is not installed", allow_module_level=True)

from iif.cli import main  # noqa: E402
from iif.detection import bench as B  # noqa: E402
from iif.detection.report import ROW_KEYS  # noqa: E402
from iif.errors import IIFError  # noqa: E402

TINY = ["arch=maskrcnn_r10_fpn", "model.min_size=64", "model.max_size=64", "model.fpn_channels=32",
        "model.representation_size=64", "model.mask_layers=[16]", "model.box_detections_per_img=40",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=40", "train.epochs=1",
        "train.batch_size=4", "train.warmup_iters=1", "train.milestones=[]", "max_train_images=20",
        "max_val_images=5", "threads=1"]


@pytest.fixture(scope="module")
def tiny_data(detection_benchmark):
    """The session's shared tiny benchmark (conftest.py); det-bench only reads it."""
    return detection_benchmark[0]


def _rows(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def quick_run(tiny_data, tmp_path_factory):
    """One quick seed-0 run with plots; the tests below only read its folder."""
    out = tmp_path_factory.mktemp("quick") / "out"
    rows = B.run_det_bench(tiny_data, quick=True, out=out, overrides=TINY)
    return out, rows


@pytest.mark.slow
def test_quick_run_writes_the_table_and_report(quick_run):
    out, rows = quick_run
    saved = _rows(out)
    assert [list(r) for r in saved] == [list(ROW_KEYS)] * len(B.POSTHOC_ROWS)
    assert saved == json.loads(json.dumps(rows))
    assert [(r["method"], r["strategy"], r["variant"], r["by"]) for r in saved] == [
        ("softmax", "posthoc", None, None),
        ("iif", "posthoc", "raw", "image"), ("iif", "posthoc", "smooth", "image"), ("iif", "posthoc", "base10", "image"),
        ("iif", "posthoc", "raw", "object"), ("iif", "posthoc", "smooth", "object"), ("iif", "posthoc", "base10", "object"),
        ("logit_adjustment", "posthoc", None, None), ("logit_adjustment", "posthoc", "background_margin", None)]
    for r in saved:
        for k in ("AP", "AP50", "AP75", "APb", "dAP_FP"):
            assert r[k] is None or 0.0 <= r[k] <= 100.0
        assert isinstance(r["false_positives"], int) and r["false_positives"] >= 0
    details = json.loads((out / "details.json").read_text())
    assert len(details) == len(saved)
    for r, d in zip(saved, details):  # the table's numbers are the evaluation's, key for key
        assert r["APb"] == pytest.approx(d["bbox"]["AP"]) and r["AP"] == pytest.approx(d["segm"]["AP"])
        assert r["dAP_FP"] == pytest.approx(d["tide"]["dAP_FP"]) and r["false_positives"] == d["false_positives"]
        assert d["false_positives_by_group"]["all"] == d["false_positives"]
    report = (out / "report.md").read_text()
    assert report.startswith("# iif det-bench\n\n## What the rows say")
    assert "Softmax detector:" in report and "not LVIS" in report
    for png in ("fp_vs_rare_ap.png", "classifier_norms.png", "examples.png"):
        assert (out / png).stat().st_size > 1000
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["quick"] is True and settings["meta"]["num_train_images"] == 20
    assert settings["meta"]["num_val_images"] == 5


@pytest.mark.slow
def test_post_hoc_softmax_row_is_the_margin_free_detector(quick_run):
    """Switching to IIF changes the detections (else the rows would be copies)."""
    d = json.loads((quick_run[0] / "details.json").read_text())
    assert d[0]["num_detections"] > 0
    soft, iif_raw = d[0], d[1]
    assert (soft["tide"], soft["bbox"]) != (iif_raw["tide"], iif_raw["bbox"]) or soft["num_detections"] != iif_raw["num_detections"]


@pytest.mark.slow
def test_end_to_end_rows_train_their_own_detector(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "POSTHOC_ROWS", B.POSTHOC_ROWS[:1])  # the post-hoc rows are checked above
    monkeypatch.setattr(B, "E2E_ROWS", (B.RowSpec("iif", "e2e", "raw", "image", when="train_and_test"),
                                         B.RowSpec("balanced_softmax", "e2e", when="train"),
                                         B.RowSpec("seesaw", "e2e", when="train")))
    rows = B.run_det_bench(tiny_data, quick=False, out=tmp_path / "o", overrides=TINY, plots=False)
    assert [(r["method"], r["strategy"]) for r in rows[-3:]] == [("iif", "e2e"), ("balanced_softmax", "e2e"),
                                                                  ("seesaw", "e2e")]
    assert len(rows) == len(B.POSTHOC_ROWS) + 3



@pytest.mark.slow
def test_seeds_give_mean_and_std(quick_run, tiny_data, tmp_path):
    """Seed 0 of a two-seed run repeats the one-seed run exactly (one seed, one result), and the table holds
    the mean and sample std (ddof 1) of the two seeds' own numbers."""
    out = tmp_path / "o"
    B.run_det_bench(tiny_data, quick=True, out=out, seeds=2, overrides=TINY, plots=False)
    n = len(B.POSTHOC_ROWS)
    details = json.loads((out / "details.json").read_text())
    assert [d["seed"] for d in details] == [0] * n + [1] * n
    assert details[:n] == json.loads((quick_run[0] / "details.json").read_text())
    means, stds = _rows(out), json.loads((out / "results_std.json").read_text())
    assert [list(r) for r in stds] == [list(ROW_KEYS)] * n == [list(r) for r in means]

    def numbers(d):
        return {"AP": d["segm"]["AP"], "APb": d["bbox"]["AP"], "dAP_FP": d["tide"]["dAP_FP"],
                "false_positives": d["false_positives"]}

    for i, (m, sd) in enumerate(zip(means, stds)):
        a, b = numbers(details[i]), numbers(details[n + i])
        for k in a:
            if a[k] is None or b[k] is None:
                continue
            assert m[k] == pytest.approx((a[k] + b[k]) / 2)
            assert sd[k] == pytest.approx(abs(a[k] - b[k]) / 2 ** 0.5)  # ddof-1 std of two numbers
    assert any(r["false_positives"] > 0 for r in stds)  # the seeds differ, so the std check above is not 0 == 0


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tpu"], "unknown det-bench preset"),
    (["nonsense"], "not KEY=VALUE"),
    (["model"], "not KEY=VALUE"),
    (["foo.bar=1"], "unknown det-bench override"),
    (["train.epochs=0"], "train.epochs"),
    (["max_val_images=-3"], "max_val_images"),
    (["score_threshold=2"], "score_threshold"),
    (["--seeds", "0"], "--seeds"),
    (["--threads", "0"], "--threads"),
])
def test_bad_settings_are_one_line_before_any_work(argv, message, tiny_data, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["det-bench", "--data", str(tiny_data), "--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_refuses_a_used_out_folder_and_a_data_folder_of_another_layout(tiny_data, tmp_path, capsys):
    used = tmp_path / "mine"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    assert main(["det-bench", "--data", str(tiny_data), "--out", str(used)]) == 2
    assert (used / "notes.txt").read_text() == "keep me"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    other = tmp_path / "photos"
    other.mkdir()
    assert main(["det-bench", "--data", str(other), "--out", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layout" in err[0].lower()
    assert not (tmp_path / "o").exists()


def test_default_benchmark_lives_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IIF_CACHE_DIR", str(tmp_path))
    assert B.default_benchmark_dir().parent == tmp_path / "det-data"
    with pytest.raises(IIFError, match="preset"):
        B.quick_settings("nope")


@pytest.mark.slow
def test_coco_layout_is_scored_with_coco_rules(tiny_data, tmp_path):
    """A user's COCO folder (no LVIS federated fields, no frequency groups) runs through to the table:
    AP from COCO rules, r/c/f groups from the training image counts by LVIS's rule (as `iif stats`)."""
    import shutil

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        shutil.copytree(tiny_data / "images" / split, root / folder)
        ann = json.loads((tiny_data / "annotations" / f"{split}.json").read_text())
        for im in ann["images"]:
            im.pop("neg_category_ids", None)
            im.pop("not_exhaustive_category_ids", None)
        for c in ann["categories"]:
            for k in ("frequency", "image_count", "instance_count"):
                c.pop(k, None)
        (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(ann))
    rows = B.run_det_bench(root, quick=True, out=tmp_path / "o", overrides=TINY, plots=False)
    assert len(rows) == len(B.POSTHOC_ROWS)
    assert all(r["AP"] is not None and r["APb"] is not None for r in rows)
    details = json.loads((tmp_path / "o" / "details.json").read_text())
    assert {d["rules"] for d in details} == {"coco"}
    assert all(d["groups"] is not None and sum(d["groups"].values()) == 20 for d in details)
    assert any(r[k] is not None for r in rows for k in ("APr", "APc", "APf"))


def test_end_to_end_rows_are_the_issue_list():
    """Issue 15's end-to-end rows: IIF raw (IIF), base10 (IOF), Balanced Softmax, the LA loss and Seesaw."""
    got = [(r.method, r.variant, r.by, r.when) for r in B.E2E_ROWS]
    assert got == [("iif", "raw", "image", "train_and_test"), ("iif", "base10", "object", "train_and_test"),
                   ("balanced_softmax", None, None, "train"), ("logit_adjustment", None, None, "train"),
                   ("seesaw", None, None, "train")]


@pytest.mark.slow
def test_workers_run_seeds_side_by_side_with_the_same_results(tiny_data, tmp_path):
    """workers=2 trains the two seeds in two spawned processes; every number equals the serial run's."""
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    B.run_det_bench(tiny_data, quick=True, out=serial, seeds=2, overrides=TINY, plots=False)
    lines = []
    B.run_det_bench(tiny_data, quick=True, out=parallel, seeds=2, overrides=TINY + ["workers=2"], plots=False,
                    log=lines.append)
    assert any("in 2 processes side by side" in line for line in lines)
    for name in ("results.json", "results_std.json", "details.json"):
        assert json.loads((parallel / name).read_text()) == json.loads((serial / name).read_text()), name
    with pytest.raises(IIFError, match="workers"):
        B.quick_settings("cpu-quick", ["workers=0"])


def test_overrides_may_follow_options_on_the_command_line(tiny_data, tmp_path, monkeypatch):
    """`iif det-bench --seeds 2 KEY=VALUE --out o KEY=VALUE`: every KEY=VALUE reaches the run, in order
    (argparse alone keeps only the first run of positionals and refuses the rest)."""
    seen = {}

    def fake(data, **kw):
        seen.update(kw)
        return []

    monkeypatch.setattr(B, "run_det_bench", fake)
    argv = ["det-bench", "--data", str(tiny_data), "train.epochs=1", "--seeds", "2", "--out", str(tmp_path / "o"),
            "threads=1", "train.epochs=2"]
    assert main(argv) == 0
    assert list(seen["overrides"]) == ["train.epochs=1", "threads=1", "train.epochs=2"] and seen["seeds"] == 2
    with pytest.raises(SystemExit):  # an unknown option is still refused
        main(["det-bench", "--data", str(tiny_data), "--bogus", "x=1"])
