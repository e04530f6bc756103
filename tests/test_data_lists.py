"""List-file datasets (ImageNet-LT style) and ImageFolder trees, on tiny trees of real JPEG/PNG files."""

import pytest
import torch
from PIL import Image

from iif.data import FileListDataset, build_datasets, validate_list
from iif.errors import IIFError


def _img(path, color, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path, format=fmt)


def _imagenet_lt_tree(root):
    """3 classes; train counts 4/2/1 (long-tailed), val and test 1 per class; JPEG and PNG mixed."""
    lines = {"train": [], "val": [], "test": []}
    for split, per in (("train", (4, 2, 1)), ("val", (1, 1, 1)), ("test", (1, 1, 1))):
        for c, n in enumerate(per):
            for i in range(n):
                ext, fmt = ("JPEG", "JPEG") if i % 2 == 0 else ("png", "PNG")
                rel = f"{split}/n{c:03d}/img_{i}.{ext}"
                _img(root / rel, (80 * c, 10 * i, 200), fmt)
                lines[split].append(f"{rel} {c}")
    for split, ls in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(ls) + "\n")
    return lines


def test_imagenet_lt_lists_stream_from_disk(tmp_path):
    _imagenet_lt_tree(tmp_path)
    s = build_datasets("imagenet-lt", root=str(tmp_path), num_classes=3, image_size=32, augment="autoaugment")
    assert s.freq.image_counts.tolist() == [4, 2, 1] and s.num_classes == 3 and s.in_channels == 3
    assert isinstance(s.train, FileListDataset) and s.train.targets == [0, 0, 0, 0, 1, 1, 2]
    x, y = s.test[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    # Eval path on a flat-colour image: every pixel normalises to (colour/255 - mean)/std; JPEG shifts a
    # flat colour by a few grey levels, hence the tolerance (4/255/0.229 = 0.07).
    expect = (torch.tensor([160, 0, 200]) / 255 - torch.tensor(s.mean)) / torch.tensor(s.std)
    assert torch.allclose(x[:, 16, 16], expect, atol=0.08)
    assert torch.allclose(x, x[:, 16:17, 16:17].expand_as(x), atol=1e-5)
    xt, _ = s.train[0]
    assert xt.shape == (3, 32, 32)


def test_validate_list_reports_line_numbers(tmp_path):
    _imagenet_lt_tree(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("train/n000/img_0.JPEG 0\ntrain/n000/missing.jpg 0\n\ntrain/n001/img_0.JPEG 7\n"
                   "train/n001/img_0.JPEG x\nonlyonefield\n")
    with pytest.raises(IIFError) as e:
        validate_list(str(bad), str(tmp_path), num_classes=3)
    msg = str(e.value)
    # 4 problems: lines 2, 4, 5, 6 (line 1 is fine, line 3 is blank)
    assert "4 bad line(s)" in msg and "line 2: missing file" in msg and "line 4: label 7 outside [0, 3)" in msg
    assert "line 5: label 'x' is not an integer" in msg and "line 6" in msg
    ok = validate_list(str(tmp_path / "ImageNet_LT_val.txt"), str(tmp_path), 3)
    assert [y for _, y in ok] == [0, 1, 2]


def test_list_dataset_errors(tmp_path):
    _imagenet_lt_tree(tmp_path)
    with pytest.raises(IIFError, match="outside"):  # default 1000 classes is fine, 2 is not
        build_datasets("imagenet-lt", root=str(tmp_path), num_classes=2)
    with pytest.raises(IIFError, match="needs root="):
        build_datasets("places-lt")
    with pytest.raises(IIFError, match="list file"):
        build_datasets("places-lt", root=str(tmp_path))
    # Default class count (1000): the tiny train list leaves classes 3..999 empty.
    with pytest.raises(IIFError, match="997 class"):
        build_datasets("imagenet-lt", root=str(tmp_path))


def test_inat2018_uses_val_list_as_test(tmp_path):
    lines = _imagenet_lt_tree(tmp_path)
    (tmp_path / "iNaturalist18_train.txt").write_text("\n".join(lines["train"]))
    (tmp_path / "iNaturalist18_val.txt").write_text("\n".join(lines["test"]))
    s = build_datasets("inat2018", root=str(tmp_path), num_classes=3, image_size=16)
    assert s.val is None and s.test.targets == [0, 1, 2] and s.freq.num_images == 7


def _folder(root, counts, fmt="PNG"):
    for c, n in enumerate(counts):
        for i in range(n):
            _img(root / f"class_{c}" / f"{i}.{fmt.lower()}", (c * 50, i, 0), fmt)


def test_folder_single_tree_split_and_longtail(tmp_path):
    _folder(tmp_path, [10, 10, 10])
    s = build_datasets("folder", root=str(tmp_path), image_size=16, seed=0)
    # per class: int(10*0.2)=2 test, int(10*0.1)=1 val, 7 train
    assert s.freq.image_counts.tolist() == [7, 7, 7] and len(s.test) == 6 and len(s.val) == 3
    paths = [set(p for p, _ in d.samples) for d in (s.train, s.val, s.test)]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    assert s.class_names == ["class_0", "class_1", "class_2"]
    lt = build_datasets("folder", root=str(tmp_path), image_size=16, imbalance_ratio=7, seed=0)
    assert lt.freq.image_counts.tolist() == [7, int(7 * 7 ** -0.5), 1]
    again = build_datasets("folder", root=str(tmp_path), image_size=16, imbalance_ratio=7, seed=0)
    assert again.train.samples == lt.train.samples


def test_folder_train_val_test_layout(tmp_path):
    _folder(tmp_path / "train", [6, 3], "JPEG")
    _folder(tmp_path / "test", [1, 1], "JPEG")
    s = build_datasets("folder", root=str(tmp_path), image_size=16, imbalance_ratio=6, val_per_class=2)
    assert s.freq.image_counts.tolist() == [6, 1] and [int(t) for t in s.test.targets] == [0, 1]
    assert sorted(s.val.targets) == [1, 1]  # class 0 kept all 6, class 1 left 2 unselected images
    x, _ = s.train[0]
    assert x.shape == (3, 16, 16)
    _folder(tmp_path / "val", [1, 1, 1], "JPEG")
    with pytest.raises(IIFError, match="class_2"):
        build_datasets("folder", root=str(tmp_path))


def test_folder_empty_class_raises(tmp_path):
    _folder(tmp_path / "train", [3, 0])
    (tmp_path / "train" / "class_1").mkdir(exist_ok=True)
    with pytest.raises(IIFError, match=r"1 \(class_1\)"):
        build_datasets("folder", root=str(tmp_path))
    with pytest.raises(IIFError, match="existing image folder"):
        build_datasets("folder", root=str(tmp_path / "nope"))


def test_one_list_parser_for_weights_frequency_and_training(tmp_path, capsys):
    """The same list file (tabs, runs of spaces, a path with a space, a comment, blank lines, CRLF, a BOM) gives
    the same counts through `iif weights`, ClassFrequency.from_list_file and the imagenet-lt train dataset."""
    import json

    from iif import ClassFrequency
    from iif.cli import main

    rows = [("train/n000/img 0.JPEG", 0), ("train/n000/img_1.png", 0), ("train/n000/img_2.JPEG", 0),
            ("train/n001/img_0.JPEG", 1), ("train/n002/img_0.JPEG", 2), ("train/n002/img_1.png", 2)]
    for rel, c in rows:
        _img(tmp_path / rel, (80 * c, 0, 0), "PNG" if rel.endswith("png") else "JPEG")
    seps = ["\t", "   ", " \t ", "\t", " ", "\t"]
    body = "".join(f"{rel}{sep}{c}\r\n" for (rel, c), sep in zip(rows, seps))
    text = "\ufeff# ImageNet-LT style list: path<TAB or spaces>label\r\n\r\n" + body + "\r\n"
    (tmp_path / "ImageNet_LT_train.txt").write_text(text, encoding="utf-8", newline="")
    for split in ("val", "test"):
        (tmp_path / f"ImageNet_LT_{split}.txt").write_text("train/n000/img_1.png 0\ntrain/n001/img_0.JPEG 1\n"
                                                             "train/n002/img_1.png 2\n")
    expected = [3, 1, 2]  # by hand from `rows`

    assert ClassFrequency.from_list_file(tmp_path / "ImageNet_LT_train.txt").image_counts.tolist() == expected
    assert main(["weights", str(tmp_path / "ImageNet_LT_train.txt"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["count"] for r in doc["classes"]] == expected
    s = build_datasets("imagenet-lt", root=str(tmp_path), num_classes=3, image_size=16)
    assert s.freq.image_counts.tolist() == expected
    assert sorted(p for p, _ in s.train.samples) == sorted(str(tmp_path / rel) for rel, _ in rows)
    assert s.train.targets == [c for _, c in rows]


def test_list_lines_the_parser_refuses_the_same_way_everywhere(tmp_path, capsys):
    from iif import ClassFrequency
    from iif.cli import main

    p = tmp_path / "ImageNet_LT_train.txt"
    p.write_text("a.jpg 0\nno_label_here\nb.jpg\t-1\n")
    with pytest.raises(IIFError) as lib:
        ClassFrequency.from_list_file(p)
    with pytest.raises(IIFError) as train:
        validate_list(str(p), str(tmp_path), 3, check_files=False)
    for msg in (str(lib.value), str(train.value)):
        assert "2 bad line(s)" in msg and "line 2: expected 'path label', got 'no_label_here'" in msg
        assert "line 3: label -1" in msg
    assert main(["weights", str(p)]) == 2
    assert "line 2: expected 'path label'" in capsys.readouterr().err
