"""Shared test set-up."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run the suite single-threaded: its tensors are tiny, and on a 2-core machine intra-op threads only
    contend (tiny convnets train ~10x faster on one thread there)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """``$IIF_CACHE_DIR`` (image-check records, the det-bench data) points into this session's own tmp folder:
    tests never write to the user's ~/.cache/iif, and parallel workers (pytest -n 2) never share a cache.
    Child processes the tests start inherit it."""
    old = os.environ.get("IIF_CACHE_DIR")
    os.environ["IIF_CACHE_DIR"] = str(tmp_path_factory.mktemp("iif-cache"))
    yield
    if old is None:
        os.environ.pop("IIF_CACHE_DIR", None)
    else:
        os.environ["IIF_CACHE_DIR"] = old


# ------------------------------------------------------------------------------------------ detection benchmark
# The tiny offline detection benchmark (iif.detection.synthetic) takes a few CPU-seconds to generate; the
# detection test modules share one copy per session (per worker under pytest-xdist, in that worker's own
# tmp folder). Tests must treat it as read-only: a test that edits it copies it first.
DETECTION_BENCHMARK = {"seed": 3, "image_size": 64, "num_train": 231, "num_val": 50, "generator": 1}


def _fake_detection_sources() -> dict:
    """Stand-in sources where the real data is not installed: a filled ellipse per label, 28x28 uint8
    (train: 200 per label, test: 60 per label), for both Fashion-MNIST and MNIST."""
    import numpy as np
    from iif.detection import synthetic

    rng = np.random.default_rng(0)

    def split(n_per_label: int):
        images = np.zeros((10 * n_per_label, 28, 28), dtype=np.uint8)
        labels = np.repeat(np.arange(10), n_per_label)
        yy, xx = np.mgrid[0:28, 0:28]
        for i, label in enumerate(labels):
            cy, cx = rng.integers(10, 18, 2)
            ry, rx = 4 + label % 5 + rng.integers(0, 3), 4 + (label * 3) % 7 + rng.integers(0, 3)
            images[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 200
        return images, labels

    return {name: split(200) + split(60) for name in (synthetic.FASHION, synthetic.MNIST)}


@pytest.fixture
def tiny_rcnn():
    """A factory of a tiny torchvision Faster R-CNN (3 foreground classes + background, one 8-channel conv as the
    backbone, 64 px), initialised from torch seed 0 at each call: the same model every time."""
    import torch
    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    def build():
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        backbone.out_channels = 8
        return FasterRCNN(backbone, num_classes=None, min_size=64, max_size=64,
                          rpn_anchor_generator=AnchorGenerator(((16, 32),), ((1.0,),)),
                          box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 32),
                          box_predictor=FastRCNNPredictor(32, 4))

    return build


@pytest.fixture
def fake_detection_sources() -> dict:
    """A fresh dict of the stand-in sources (tests may edit it)."""
    return _fake_detection_sources()


@pytest.fixture(scope="session")
def detection_sources():
    """Fashion-MNIST + MNIST arrays for the detection benchmark: the real ones when installed, else fakes."""
    pytest.importorskip("pycocotools")
    from iif.detection import synthetic
    from iif.errors import IIFError

    try:
        return synthetic._load_sources(None, False)
    except IIFError:
        return _fake_detection_sources()


@pytest.fixture(scope="session")
def detection_benchmark(tmp_path_factory, detection_sources):
    """``(root, summary)`` of one tiny benchmark (:data:`DETECTION_BENCHMARK`) shared by the whole session."""
    import warnings

    from iif.detection.synthetic import make_benchmark

    root = tmp_path_factory.mktemp("detection-benchmark") / "bench"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = make_benchmark(root, sources=detection_sources, **DETECTION_BENCHMARK)
    before = _tree_state(root)
    yield root, summary
    assert _tree_state(root) == before, "a test changed the shared detection benchmark; copy it before editing"


def _tree_state(root) -> list:
    """Every file and folder under ``root`` with its size and modification time."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
