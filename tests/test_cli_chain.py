"""The own-data chain end to end: iif train -> iif eval --save-logits -> iif posthoc DIR -> iif predict.

Each step is checked against an independent route: the saved logits against a forward pass written here,
posthoc's rows against accuracies computed from the saved arrays with numpy, predict's scores against the
model applied to a tensor normalised by hand.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from iif.cli import main
from iif.data import build_datasets
from iif.models import build_model, load_state


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny digits-lt run (1 epoch) and its --save-logits folder."""
    d = tmp_path_factory.mktemp("chain")
    assert main(["train", "digits_lt_e2e", "schedule.epochs=1", "runtime.device=cpu", "--quiet",
                 "--out", str(d / "run")]) == 0
    assert main(["eval", str(d / "run" / "last.pt"), "--save-logits", str(d / "logits"), "--device", "cpu"]) == 0
    return d


def _model(run):
    ckpt = torch.load(run / "run" / "last.pt", weights_only=True)
    splits = build_datasets("digits-lt")
    model = build_model("small_cnn", 10, "linear", 1, backbone_kwargs={"width": 8})
    load_state(model, ckpt["model"])
    return model.eval(), splits, ckpt


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def test_save_logits_writes_what_the_model_computes(run):
    folder = run / "logits"
    names = {p.name for p in folder.iterdir()}
    assert {"logits_test.npy", "labels_test.npy", "logits_val.npy", "labels_val.npy", "counts.json",
            "manifest.json"} <= names
    model, splits, ckpt = _model(run)
    for split, ds in (("test", splits.test), ("val", splits.val)):
        x = ((ds.images.float() / 255.0) - 0.3053) / 0.3759  # digits-lt normalisation, by hand
        with torch.no_grad():
            expect = model(x).numpy()
        np.testing.assert_allclose(np.load(folder / f"logits_{split}.npy"), expect, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.load(folder / f"labels_{split}.npy"), ds.targets.numpy())
    saved = json.loads((folder / "counts.json").read_text())
    assert saved["image_counts"] == ckpt["class_counts"] == np.bincount(splits.train.targets.numpy()).tolist()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["test"]["num_samples"] == len(splits.test)
    # iif eval's own metrics agree with the saved arrays.
    metrics = json.loads((run / "run" / "eval_test.json").read_text())
    z, y = np.load(folder / "logits_test.npy"), np.load(folder / "labels_test.npy")
    assert metrics["raw"]["top1"] == pytest.approx(100.0 * np.mean(z.argmax(1) == y))


def test_save_logits_refuses_a_foreign_folder_and_replaces_its_own_with_force(run, capsys):
    foreign = run / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    ckpt = str(run / "run" / "last.pt")
    assert main(["eval", ckpt, "--save-logits", str(foreign), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--save-logits" in err and "--out" not in err
    assert (foreign / "notes.txt").read_text() == "keep me" and not (foreign / "manifest.json").exists()
    assert main(["eval", ckpt, "--save-logits", str(run / "logits"), "--device", "cpu"]) == 2  # ours, no --force
    capsys.readouterr()
    before = np.load(run / "logits" / "logits_test.npy")
    assert main(["eval", ckpt, "--save-logits", str(run / "logits"), "--force", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.load(run / "logits" / "logits_test.npy"), before)


def _rows(capsys):
    return json.loads(capsys.readouterr().out)


def _row(rows, method, variant=None):
    return next(r for r in rows if r["method"] == method and r["variant"] == variant)


def test_posthoc_on_the_folder_matches_numpy(run, capsys):
    folder = run / "logits"
    assert main(["posthoc", str(folder), "--format", "json"]) == 0
    rows = _rows(capsys)
    z, y = np.load(folder / "logits_test.npy").astype(np.float64), np.load(folder / "labels_test.npy")
    n = np.asarray(json.loads((folder / "counts.json").read_text())["image_counts"], dtype=np.float64)
    assert _row(rows, "softmax")["top1"] == pytest.approx(100.0 * np.mean(z.argmax(1) == y))
    w = np.log((n.sum() + 1) / (n + 1)) + 1  # smooth IIF weights, by hand
    assert _row(rows, "IIF", "smooth")["top1"] == pytest.approx(100.0 * np.mean((z * w).argmax(1) == y))
    assert any(r["method"] == "IIF tuned" for r in rows)  # the folder's validation logits were used
    # Shot groups as iif eval recorded them (no class above 100 images: many > 50, few < 15), head named.
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["many"], manifest["few"]) == (50, 15) and {r["head"] for r in rows} == {"linear"}
    per_class = np.array([np.mean(z[y == c].argmax(1) == c) for c in range(len(n))])
    assert _row(rows, "softmax")["few"] == pytest.approx(100.0 * per_class[n < 15].mean())
    assert _row(rows, "softmax")["many"] == pytest.approx(100.0 * per_class[n > 50].mean())


def test_posthoc_reads_pt_and_npz_and_a_json_list(run, tmp_path, capsys):
    folder = run / "logits"
    z, y = np.load(folder / "logits_test.npy"), np.load(folder / "labels_test.npy")
    counts = json.loads((folder / "counts.json").read_text())["image_counts"]
    torch.save({"logits": torch.from_numpy(z), "labels": torch.from_numpy(y)}, tmp_path / "test.pt")
    np.savez(tmp_path / "test.npz", logits=z, labels=y)
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    assert main(["posthoc", str(folder), "--format", "json"]) == 0
    want = [r for r in _rows(capsys) if r["method"] != "IIF tuned"]
    for f in ("test.pt", "test.npz"):
        assert main(["posthoc", "--logits", str(tmp_path / f), "--labels", str(tmp_path / f),
                     "--counts", str(tmp_path / "counts.json"), "--format", "json", "--head", "linear"]) == 0
        assert _rows(capsys) == want
    torch.save({"w": torch.zeros(3), "b": torch.zeros(3)}, tmp_path / "other.pt")
    assert main(["posthoc", "--logits", str(tmp_path / "other.pt"), "--labels", str(tmp_path / "test.pt"),
                 "--counts", str(tmp_path / "counts.json")]) == 2
    assert "none is named 'logits'" in capsys.readouterr().err


def test_posthoc_without_inputs_says_what_is_missing(capsys):
    assert main(["posthoc"]) == 2
    assert "--logits, --labels and --counts" in capsys.readouterr().err


def _pngs(tmp_path, splits, k=5):
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    paths = []
    for i in range(k):
        p = folder / ("sub" if i % 2 else "") / f"img{i}.png"
        Image.fromarray(splits.test.images[i, 0].numpy(), mode="L").save(p)
        paths.append(p)
    return folder, paths


def test_predict_scores_equal_the_model_on_a_hand_normalised_tensor(run, tmp_path, capsys):
    model, splits, ckpt = _model(run)
    folder, paths = _pngs(tmp_path, splits)
    assert main(["predict", str(run / "run" / "last.pt"), str(folder), "--topk", "3", "--format", "json",
                 "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == sorted(str(p) for p in paths)
    x = ((splits.test.images[:5].float() / 255.0) - 0.3053) / 0.3759
    with torch.no_grad():
        z = model(x).numpy().astype(np.float64)
    w = np.log((sum(ckpt["class_counts"]) + 1) / (np.asarray(ckpt["class_counts"], dtype=np.float64) + 1)) + 1
    assert main(["predict", str(run / "run"), str(folder), "--topk", "3", "--format", "json", "--device", "cpu",
                 "--adjust", "iif:smooth"]) == 0
    adjusted = json.loads(capsys.readouterr().out)
    for rows, logits in ((rows, z), (adjusted, z * w)):
        probs = _softmax(logits)
        for r in rows:
            i = int(r["path"].rsplit("img", 1)[1].split(".")[0])
            top = np.argsort(-probs[i])[:3]
            assert [t["index"] for t in r["top"]] == top.tolist()
            assert [t["class"] for t in r["top"]] == [str(c) for c in top]
            np.testing.assert_allclose([t["score"] for t in r["top"]], probs[i, top], rtol=1e-4, atol=1e-6)


def test_predict_csv_out_file_and_unreadable_images(run, tmp_path, capsys):
    _, splits, _ = _model(run)
    folder, paths = _pngs(tmp_path, splits, k=2)
    (folder / "broken.png").write_bytes(b"not a png")
    ckpt = str(run / "run" / "last.pt")
    out = tmp_path / "pred.csv"
    assert main(["predict", ckpt, str(folder), "--format", "csv", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and err.count("\n") == 1 and not out.exists()
    assert main(["predict", ckpt, str(folder), "--format", "csv", "--out", str(out), "--topk", "2",
                 "--skip-unreadable", "--device", "cpu"]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0] == "path,rank,class,index,score" and len(lines) == 1 + 2 * 2
    assert main(["predict", ckpt, str(tmp_path / "nope.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_predict_on_a_folder_checkpoint_matches_the_datasets_own_eval_route(tmp_path, capsys):
    """Non-square images in a small ImageFolder tree: predict must preprocess a file exactly as the
    dataset's evaluation split does (decode, resize, normalise) before the same model."""
    from iif.models import load_state
    from iif.train import load_config
    from iif.train.engine import build_model_for, build_splits

    rng = np.random.default_rng(0)
    for c, n in enumerate((12, 8, 6)):
        (tmp_path / "tree" / f"k{c}").mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (14, 20, 3), dtype=np.uint8)
            arr[..., c] = 255  # learnable colour cue
            Image.fromarray(arr).save(tmp_path / "tree" / f"k{c}" / f"{i}.png")
    assert main(["train", "folder", f"data.root={tmp_path / 'tree'}", "schedule.epochs=1", "decoupled.epochs=1",
                 "data.num_workers=0", "runtime.device=cpu", "--quiet", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    splits = build_splits(load_config(ckpt["config"]))
    model = build_model_for(load_config(ckpt["config"]), splits)
    load_state(model, ckpt["model"])
    model.eval()
    files = [p for p, _ in splits.test.samples]
    assert main(["eval", str(tmp_path / "run"), "--save-logits", str(tmp_path / "z"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert (tmp_path / "z" / "files_test.txt").read_text().splitlines() == files
    np.testing.assert_array_equal(np.load(tmp_path / "z" / "labels_test.npy"), [y for _, y in splits.test.samples])
    with torch.no_grad():
        x = torch.stack([splits.test[i][0] for i in range(len(files))])
        probs = torch.softmax(model(x), dim=1).numpy()
    # predict needs only the checkpoint: copies of the test images, training tree moved away
    (tmp_path / "new").mkdir()
    copies = [str(tmp_path / "new" / f"{i:03d}.png") for i in range(len(files))]
    for src, dst in zip(files, copies):
        shutil.copyfile(src, dst)
    (tmp_path / "tree").rename(tmp_path / "gone")
    assert main(["predict", str(tmp_path / "run"), *copies, "--topk", "3", "--format", "json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == copies
    for i, r in enumerate(rows):
        top = np.argsort(-probs[i])[:3]
        assert [t["index"] for t in r["top"]] == top.tolist()
        assert [t["class"] for t in r["top"]] == [splits.class_names[j] for j in top]
        np.testing.assert_allclose([t["score"] for t in r["top"]], probs[i, top], rtol=1e-4, atol=1e-6)


def test_a_run_folder_means_the_checkpoint_its_final_metrics_came_from(run, tmp_path):
    from iif.train.evaluation import restore_checkpoint

    folder = tmp_path / "r"
    shutil.copytree(run / "run", folder)
    last = torch.load(folder / "last.pt", weights_only=True)
    torch.save(last, folder / "best.pt")
    assert restore_checkpoint(folder, "cpu", build_data=False).path == str(folder / "best.pt")
    last["config"]["eval"]["select"] = "last"
    torch.save(last, folder / "best.pt")
    assert restore_checkpoint(folder, "cpu", build_data=False).path == str(folder / "last.pt")
    (folder / "best.pt").unlink()
    assert restore_checkpoint(folder, "cpu", build_data=False).path == str(folder / "last.pt")


class _NotATensor:  # pickled by torch.save; weights_only=True must refuse to rebuild it
    pass


def test_posthoc_refuses_a_pt_that_needs_more_than_tensors(tmp_path, capsys):
    torch.save({"logits": _NotATensor()}, tmp_path / "evil.pt")
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    (tmp_path / "c.json").write_text("[3, 2]")
    assert main(["posthoc", "--logits", str(tmp_path / "evil.pt"), "--labels", str(tmp_path / "y.npy"),
                 "--counts", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only=True" in err and "evil.pt" in err
