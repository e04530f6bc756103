"""``iif det-bench``'s data: the cached offline benchmark (generated once), a ``--data`` folder or det-train's
four path keys, resolved to the training split and the reported split (test on a generator-2 benchmark,
with val kept for the tuned rows). Runs: :mod:`iif.detection.bench`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import IIFError
from ..readers import read_json
from .archs import has_masks
from .bench_settings import DATA_KEYS, DetBenchSettings

__all__ = ["default_benchmark_dir", "split_data_overrides", "DATA_KEYS"]


def default_benchmark_dir(seed: int = 0, generator: int | None = None) -> Path:
    """Where the default offline benchmark of generator version ``generator`` (None:
    :data:`iif.detection.synthetic.DEFAULT_GENERATOR`) is generated once and reused: ``det-data/v1-seed0``,
    ``det-data/v2-seed0`` under the cache (the v1 path is the one every recorded run used)."""
    from .synthetic import DEFAULT_GENERATOR

    version = DEFAULT_GENERATOR if generator is None else int(generator)
    root = Path(os.environ.get("IIF_CACHE_DIR") or Path.home() / ".cache" / "iif")
    return root / "det-data" / f"v{version}-seed{seed}"


def _default_data(log: Callable[[str], Any], generator: int | None = None) -> Path:
    from .synthetic import DEFAULT_GENERATOR, make_benchmark, validate_benchmark

    generator = DEFAULT_GENERATOR if generator is None else generator
    path = default_benchmark_dir(generator=generator)
    if (path / "BENCHMARK.json").is_file():
        try:
            validate_benchmark(path, generator=generator)
            return path
        except IIFError as exc:
            log(f"det-bench: regenerating the cached benchmark at {path} ({exc})")
    log(f"det-bench: generating the offline benchmark (generator {generator}) into {path} (once; about 15 s for "
        "version 1, longer for version 2)")
    path.parent.mkdir(parents=True, exist_ok=True)
    make_benchmark(path, seed=0, force=path.exists(), generator=generator)
    return path


@dataclass
class _Data:
    root: Path
    train: Any
    val: Any
    val_json: dict
    benchmark: dict | None
    paths: tuple = ()  # (train_json, train_images, val_json, val_images) as read
    # The split ``val``/``val_json`` hold, which the rows are scored on: "test" for a generator-2 benchmark
    # (its val split is for choosing), else "val". ``tune_paths``: (val_json, val_images) of a generator-2
    # benchmark, kept for rows tuned on val and reported on test; () otherwise.
    eval_split: str = "val"
    tune_paths: tuple = ()
    # The val split of ``tune_paths`` as (dataset, annotation json), for the tuned rows; None without one.
    tune: Any = None




def split_data_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``(paths, rest)``: the ``data.train_json=...``-style overrides (det-train's config keys, so one set of
    paths serves both commands) as ``{"train_json": ...}``, and every other override in its order."""
    paths: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and key.startswith("data."):
            if key not in DATA_KEYS:
                raise IIFError(f"unknown det-bench override {key!r}; the data keys are {', '.join(DATA_KEYS)} "
                               "(or --data FOLDER).")
            paths[key[len("data."):]] = value
        else:
            rest.append(item)
    return paths, rest


def _data_paths(data: str | os.PathLike | None, paths: dict[str, str], log,
                generator: int | None = None) -> tuple[Path | None, tuple[Path, ...]]:
    """``(root, (train_json, train_images, val_json, val_images))``: det-train's rules
    (:func:`iif.detection.runs.data_paths`): the explicit ``data.*`` paths, any missing one from the ``--data``
    folder's layout; without either, the offline benchmark of generator version ``generator``."""
    from .config import load_detection_config
    from .runs import data_paths

    if data is None and not paths:
        root = _default_data(log, generator)
    else:
        root = Path(data) if data is not None else None
    cfg = load_detection_config({"data": {"root": None if root is None else str(root), **paths}})
    return root, data_paths(cfg)


def _benchmark_version(bench: dict | None, train_json: Path, generator: int | None) -> int | None:
    """The generator version of the benchmark the data belongs to (None: not an ``iif det-data`` folder).
    ``generator`` given and different (or given for data that is no benchmark) is refused in one line naming
    the fix (:func:`iif.detection.synthetic.validate_benchmark`'s message), before anything is trained."""
    from .synthetic import validate_benchmark

    root = Path(train_json).parent.parent
    if bench is None:
        if generator is not None:
            raise IIFError(f"det-bench setting generator={generator} names a version of the offline benchmark, but "
                           f"the data ({train_json}) is not an `iif det-data` folder; leave generator out for "
                           "other data, or write one with `iif det-data --generator "
                           f"{generator} --out DIR` and pass --data DIR.")
        return None
    version = bench.get("generator_version")
    if generator is not None and version != generator:
        validate_benchmark(root, generator=generator)  # raises: the version check comes before any other
        raise IIFError(f"{root} was written by benchmark generator version {version}, version {generator} is "
                       f"needed here; write one with `iif det-data --generator {generator} --out NEW_DIR`.")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _load_data(data: str | os.PathLike | None, s: DetBenchSettings, log, paths: dict[str, str] | None = None) -> _Data:
    from .data import covering_subset, load_detection_dataset, restrict_annotations
    from .runs import _benchmark_marker

    paths = dict(paths or {})
    root, (train_json, train_images, val_json, val_images) = _data_paths(data, paths, log, s.generator)
    bench = _benchmark_marker(train_json)  # ROOT/BENCHMARK.json of an `iif det-data` folder
    version = _benchmark_version(bench, train_json, s.generator)
    if s.generator is None:
        s.generator = version  # recorded in settings.json (None: not a benchmark)
    eval_split, tune_paths = "val", ()
    if version == 2 and not ({"val_json", "val_images"} & set(paths)):
        # A v2 benchmark is reported on its test split; val stays available for choosing (tuned rows).
        from .data import resolve_detection_data

        tune_paths = (val_json, val_images)
        _, _, val_json, val_images = resolve_detection_data(Path(train_json).parent.parent, eval_split="test")
        eval_split = "test"
        log(f"det-bench: generator-2 benchmark: rows scored on the test split ({val_json}); val kept for choosing")
    if root is None:
        root = Path(train_json)  # what settings.json and report.md name as the data
    hflip = s.hflip
    if hflip is None:
        hflip = bool((bench or {}).get("recommended", {}).get("hflip", True))
    masks = has_masks(s.arch)
    train = load_detection_dataset(train_json, train_images, train=True, masks=masks, hflip=hflip)
    val = load_detection_dataset(val_json, val_images, train=False, masks=masks, hflip=False)
    val_ann = read_json(val_json)
    if s.max_train_images is not None and s.max_train_images < len(train):
        train = covering_subset(train, s.max_train_images)
    if s.max_val_images is not None and s.max_val_images < len(val):
        keep = set(val.image_ids[: s.max_val_images])
        val_ann = restrict_annotations(val_ann, keep)
        val = load_detection_dataset(val_ann, val_images, train=False, masks=masks, hflip=False)
    tune = None
    if tune_paths:  # the val split the tuned rows choose on (max_val_images caps it too)
        tune_ann = read_json(tune_paths[0])
        if s.max_val_images is not None:
            keep = {im["id"] for im in tune_ann["images"][: s.max_val_images]}
            tune_ann = restrict_annotations(tune_ann, keep)
        tune = (load_detection_dataset(tune_ann, tune_paths[1], train=False, masks=masks, hflip=False), tune_ann)
    return _Data(root, train, val, val_ann, bench, (train_json, train_images, val_json, val_images), eval_split,
                 tune_paths, tune)
