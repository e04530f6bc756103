"""iif explain (the paper's Fig. 6 analysis for classifiers): class scores, class-score heatmap, Grad-CAM.

The model is built here: a small CNN trained for a few seconds on 32x32 grey images whose only evidence of
class k is a bright square in the k-th corner, so where each class's evidence lies is known. Its Grad-CAM is
checked against Grad-CAM written here with autograd hooks (Selvaraju et al.: weights = spatial mean of the
gradient of the class logit, ReLU of the weighted channel sum), its heatmap against the head applied by hand
to each location (whose mean over the locations is the logit: linear head after global average pooling).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import captum  # noqa: F401  (the dev extra installs it: these tests run in CI, never skipped)

from iif.cli import main
from iif.errors import IIFError
from iif.explain import DecisionModel, explain_image, grad_cam, score_map, spatial_layer
from iif.models import build_model
from iif.train.config import config_to_dict, load_config

SIZE, SQ = 32, 8
NAMES = ["top_left", "top_right", "bottom_left", "bottom_right"]
CORNERS = {0: (2, 2), 1: (2, 22), 2: (22, 2), 3: (22, 22)}  # top-left pixel of each class's square


def _images(labels, rng, extra=None):
    x = rng.uniform(0.0, 0.3, (len(labels), 1, SIZE, SIZE)).astype(np.float32)
    for i, k in enumerate(labels):
        for c in [k] + ([extra[i]] if extra is not None and extra[i] is not None else []):
            r, col = CORNERS[int(c)]
            x[i, 0, r:r + SQ, col:col + SQ] = 1.0
    return torch.from_numpy(x)


def _train():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("small_cnn", 4, "linear", 1, backbone_kwargs={"width": 8})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        y = torch.from_numpy(rng.integers(0, 4, 32))
        loss = F.cross_entropy(model(_images(y.tolist(), rng)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _save(path, model, loss, names=NAMES, stage="e2e", overrides=()):
    cfg = load_config("digits_lt_e2e", [f"loss.name={loss}", *overrides])
    pre = {"kind": "tensor", "image_size": SIZE, "channels": 1, "mean": [0.0], "std": [1.0], "class_names": names}
    torch.save({"config": config_to_dict(cfg), "model": model.state_dict(), "class_counts": [200, 60, 20, 5],
                "arch": {"arch": "small_cnn", "head": "linear", "num_classes": 4}, "preprocess": pre,
                "stage": stage}, path)
    return path


def _png(path, x, mode="L"):
    arr = (x[0, 0].numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr, mode="L")
    (img.convert(mode) if mode != "L" else img).save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    model = _train()
    rng = np.random.default_rng(1)
    test_y = rng.integers(0, 4, 64)
    with torch.no_grad():
        acc = (model(_images(test_y.tolist(), rng)).argmax(1).numpy() == test_y).mean()
    assert acc == 1.0  # the corner squares are learnt: the tests below explain a model that works
    (d / "bottom_right").mkdir()
    return {"dir": d, "model": model, "ce": _save(d / "ce.pt", model, "ce"), "iif": _save(d / "iif.pt", model, "iif"),
            "br": _png(d / "bottom_right" / "one.png", _images([3], rng)),
            "two": _png(d / "two.png", _images([0], rng, extra=[3]))}  # squares top-left and bottom-right


def _hand_gradcam(model, x, c):
    """Grad-CAM by hand: the last ReLU of the small CNN's body (the map global pooling averages)."""
    store = {}
    layer = model.backbone.body[-3]
    h = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    relu_inplace, layer.inplace = layer.inplace, False
    try:
        z = model(x)
    finally:
        h.remove()
        layer.inplace = relu_inplace
    a = store["a"]
    (g,) = torch.autograd.grad(z[0, c], a)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0]
    return F.interpolate(cam[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0].detach().numpy()


def _quadrant(peak):
    return (int(peak[0] >= SIZE // 2), int(peak[1] >= SIZE // 2))


def test_gradcam_and_heatmap_peak_on_the_class_evidence(setup):
    m = explain_image(setup["ce"], setup["br"])  # parent folder 'bottom_right' is the true class
    assert m.target == 3 and m.predicted == 3 and m.layer == "body.10"
    assert _quadrant(np.unravel_index(np.argmax(m.gradcam[3]), m.gradcam[3].shape)) == (1, 1)
    assert _quadrant(np.unravel_index(np.argmax(m.score_map), m.score_map.shape)) == (1, 1)
    # an image with two squares: each asked class's Grad-CAM peaks on its own square
    for cls, quad in (("top_left", (0, 0)), ("bottom_right", (1, 1))):
        e = explain_image(setup["ce"], setup["two"], target=cls)
        cam = e.gradcam[e.target]
        assert _quadrant(np.unravel_index(np.argmax(cam), cam.shape)) == quad, cls
        assert e.summary()["gradcam_peak"][cls] == list(np.unravel_index(int(np.argmax(cam)), cam.shape))


def test_gradcam_equals_gradcam_by_hand_and_the_heatmap_averages_to_the_logits(setup):
    model = setup["model"]
    x = torch.from_numpy(np.asarray(Image.open(setup["two"]), np.float32) / 255.0)[None, None]
    m = explain_image(setup["ce"], setup["two"], target="top_left")
    for c in (0, 3):
        e = m if c == 0 else explain_image(setup["ce"], setup["two"], target=c)
        np.testing.assert_allclose(e.gradcam[c], _hand_gradcam(model, x, c), rtol=1e-4, atol=1e-6)
    name, layer, fmap = spatial_layer(model.backbone, x)
    assert name == "body.10" and fmap.shape == (1, 32, 8, 8)
    smap = score_map(DecisionModel(model, None), fmap, 32)
    with torch.no_grad():
        np.testing.assert_allclose(smap.mean((1, 2)).numpy(), model(x)[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.logits, model(x)[0].numpy(), rtol=1e-4, atol=1e-5)


def test_iif_checkpoint_scores_w_times_z(setup):
    from iif import iif_weights

    ce = explain_image(setup["ce"], setup["br"])
    iif = explain_image(setup["iif"], setup["br"])
    w = iif_weights(torch.tensor([200, 60, 20, 5]), "smooth", norm="mean").numpy()
    np.testing.assert_allclose(iif.logits, w * ce.logits, rtol=1e-5, atol=1e-6)
    # Grad-CAM of w_c * z_c is w_c times Grad-CAM of z_c (w_c > 0)
    np.testing.assert_allclose(iif.gradcam[3], w[3] * ce.gradcam[3], rtol=1e-4, atol=1e-6)


def test_cli_writes_readable_pngs_side_by_side(setup, capsys):
    out = setup["dir"] / "out"
    assert main(["explain", str(setup["ce"]), str(setup["two"]), "--class", "bottom_right",
                 "--compare", str(setup["iif"]), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert {"explain.png", "explain.json"} <= set(names)
    with Image.open(out / "explain.png") as im:
        im.load()
        assert im.width > 1000 and im.height > 400  # two rows of five panels
    rows = json.loads((out / "explain.json").read_text())["checkpoints"]
    assert [r["target"] for r in rows] == ["bottom_right", "bottom_right"] and len(rows) == 2
    assert rows[0]["label"] == "ce (ce.pt)" and rows[1]["label"] == "iif:smooth (iif.pt)"
    assert "explain.png" in capsys.readouterr().err


def test_label_of_a_stage2_checkpoint_is_stage_twos_loss(setup):
    path = _save(setup["dir"] / "s2.pt", setup["model"], "ce", stage="stage2",
                 overrides=["strategy.name=decoupled", "decoupled.loss=iif", "decoupled.variant=raw"])
    m = explain_image(path, setup["br"], adjust="none")
    assert m.label == "stage2 iif:raw (s2.pt)" and m.predicted == 3


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def test_bad_inputs_are_one_line(setup, capsys, tmp_path):
    ce, two = str(setup["ce"]), str(setup["two"])
    rgb = _png(tmp_path / "rgb.png", _images([0], np.random.default_rng(2)), mode="RGB")
    _one_line_error(capsys, ["explain", ce, str(rgb), "--out", str(tmp_path / "o")], "3 channel", "convert")
    rgba = _png(tmp_path / "rgba.png", _images([0], np.random.default_rng(2)), mode="RGBA")
    _one_line_error(capsys, ["explain", ce, str(rgba), "--out", str(tmp_path / "o")], "4 channel")
    _one_line_error(capsys, ["explain", ce, two, "--class", "toaster", "--out", str(tmp_path / "o")],
                    "'toaster'", "top_left")
    _one_line_error(capsys, ["explain", ce, two, "--class", "4", "--out", str(tmp_path / "o")], "'4'")
    nonames = _save(tmp_path / "nonames.pt", setup["model"], "ce", names=[])
    _one_line_error(capsys, ["explain", str(nonames), two, "--out", str(tmp_path / "o")], "class names")
    det = tmp_path / "det.pt"
    torch.save({"model": setup["model"].state_dict(), "settings": {"arch": "fasterrcnn"}}, det)
    _one_line_error(capsys, ["explain", str(det), two, "--out", str(tmp_path / "o")], "det-train")
    for out in (ce, two, str(setup["dir"] / "bottom_right")):  # --out may not be (or hold) an input
        _one_line_error(capsys, ["explain", ce, str(setup["br"]), "--out", out], "--out")
    _one_line_error(capsys, ["explain", ce, two, "--compare", str(setup["iif"]), "--out", str(setup["iif"])], "--out")
    assert not (tmp_path / "o").exists()
    # --force over an earlier explain output that holds the image given: refused as an input, not replaced
    assert main(["explain", ce, two, "--out", str(tmp_path / "done")]) == 0
    capsys.readouterr()
    _one_line_error(capsys, ["explain", ce, str(tmp_path / "done" / "explain.png"), "--out", str(tmp_path / "done"),
                             "--force"], "--out", "the image")
    assert (tmp_path / "done" / "explain.png").is_file()


def test_missing_captum_names_the_extra(setup, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(IIFError, match=r'pip install "iif\[explain\]"'):
        explain_image(setup["ce"], setup["br"])


def test_heatmap_is_left_out_when_the_map_does_not_fit_the_head():
    """A backbone whose last map has 6 channels before a 6 -> 4 projection: the head (4 inputs) cannot score
    its locations, so the class-score heatmap is None (the figure says n/a); Grad-CAM still has the map."""
    from torch import nn

    from iif.models.factory import ImageClassifier

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                             nn.Linear(6, 4))
    model = ImageClassifier(backbone, nn.Linear(4, 3), 4).eval()
    x = torch.randn(1, 1, 8, 8)
    name, layer, fmap = spatial_layer(backbone, x)
    assert name == "1" and fmap.shape == (1, 6, 8, 8)
    assert score_map(DecisionModel(model, None), fmap, 4) is None
    cams = grad_cam(DecisionModel(model, None), layer, x, [0, 2, 0])
    assert sorted(cams) == [0, 2] and all(c.shape == (8, 8) and bool((c >= 0).all()) for c in cams.values())


def test_explain_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nimport iif.cli\ntry:\n    iif.cli.main(['explain', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint([m for m in ('torch', 'torchvision', 'captum', 'matplotlib') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage: iif explain" in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


def test_summary_peaks_are_none_for_an_all_zero_map():
    from iif.explain import ClassMaps

    z = np.zeros((4, 4), np.float32)
    cam = z.copy()
    cam[3, 1] = 0.5
    m = ClassMaps(checkpoint="c.pt", label="ce", class_names=["a", "b"], logits=np.array([1.0, 0.0]),
                  scores=np.array([0.73, 0.27]), predicted=0, target=1, image=np.zeros((4, 4, 3)), layer="x",
                  score_map=None, gradcam={0: cam, 1: z})
    s = m.summary()
    assert s["gradcam_peak"] == {"a": [3, 1], "b": None} and s["score_map_peak"] is None
    assert s["predicted"] == "a" and s["target"] == "b" and [t["class"] for t in s["top"]] == ["a", "b"]
