"""iif.predict: finding images, rebuilding a checkpoint's evaluation transform, grey/RGB conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iif.data.transforms import build_transform
from iif.errors import IIFError
from iif.predict import image_paths, image_transform, load_image


def _png(path, size=(10, 6), mode="RGB", value=None):
    rng = np.random.default_rng(len(str(path)))
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = rng.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_image_paths_keeps_files_in_order_and_searches_folders(tmp_path):
    (tmp_path / "d" / "b").mkdir(parents=True)
    a = _png(tmp_path / "d" / "z.png")
    b = _png(tmp_path / "d" / "b" / "a.jpg")
    (tmp_path / "d" / "notes.txt").write_text("x")
    single = _png(tmp_path / "one.png")
    assert image_paths([single, tmp_path / "d"]) == [single, b, a]  # folder part sorted, text file left out
    with pytest.raises(IIFError, match="no such file"):
        image_paths([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(IIFError, match="holds no image files"):
        image_paths([tmp_path / "empty"])


def test_file_backed_checkpoints_use_the_datasets_eval_transform(tmp_path):
    pre = {"kind": "pil", "image_size": 12, "channels": 3, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
           "class_names": ["a", "b"]}
    img = load_image(_png(tmp_path / "x.png", size=(20, 15)), 3)
    want = build_transform("none", pre["mean"], pre["std"], train=False, image_size=12, kind="pil")(img)
    got = image_transform(pre)(img)
    assert got.shape == (3, 12, 12)
    torch.testing.assert_close(got, want)


def test_in_memory_checkpoints_resize_then_normalise_by_hand(tmp_path):
    pre = {"kind": "tensor", "image_size": 4, "channels": 1, "mean": [0.25], "std": [0.5], "class_names": ["0"]}
    img = load_image(_png(tmp_path / "g.png", size=(4, 4), mode="RGB", value=200), 1)  # RGB file -> grey
    assert img.mode == "L"
    got = image_transform(pre)(img)
    assert got.shape == (1, 4, 4)
    torch.testing.assert_close(got, torch.full((1, 4, 4), (200 / 255 - 0.25) / 0.5))
    big = load_image(_png(tmp_path / "big.png", size=(8, 8), mode="L", value=51), 1)
    torch.testing.assert_close(image_transform(pre)(big), torch.full((1, 4, 4), (51 / 255 - 0.25) / 0.5))
