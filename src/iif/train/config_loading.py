"""The loader behind every config (classification :class:`~iif.train.config.TrainConfig` and the detection
config): YAML files with ``base:`` chains, packaged short names, dicts, and ``section.key=value`` overrides
type-checked against the dataclass annotations, an unknown key answered with the nearest valid one."""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import IIFError
from ..validation import suggest


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except IIFError as exc:
                errors.append(str(exc))
        raise IIFError(errors[0] if errors else f"{where}: bad value {value!r}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise IIFError(f"config key {where!r} must be true or false; got {value!r}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" as a string
                return float(value)
            except ValueError:
                pass
        raise IIFError(f"config key {where!r} must be a number; got {value!r}.")
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise IIFError(f"config key {where!r} is too large ({value:.3g}); it must fit a 64-bit integer.")
            return value
        raise IIFError(f"config key {where!r} must be a whole number; got {value!r}.")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise IIFError(f"config key {where!r} must be a string; got {value!r}.")
    if hint is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise IIFError(f"config key {where!r} must be a list (e.g. [1, 2]); got {value!r}.")
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise IIFError(f"config key {where!r} must be a mapping (e.g. {{a: 1}}); got {value!r}.")
    return value


def _set_section(section_obj: Any, values: Mapping, prefix: str) -> None:
    hints = _hints(type(section_obj))
    names = [f.name for f in dataclasses.fields(section_obj)]
    for key, value in values.items():
        where = f"{prefix}.{key}"
        if key not in names:
            raise IIFError(f"unknown config key {where!r}.{suggest(key, names)} Valid keys in {prefix!r}: {', '.join(names)}.")
        setattr(section_obj, key, _coerce(value, hints[key], where))


def _merge(cfg: Any, data: Mapping) -> None:
    sections = [f.name for f in dataclasses.fields(cfg)]
    for name, values in data.items():
        if name not in sections:
            raise IIFError(f"unknown config section {name!r}.{suggest(name, sections)} Valid sections: {', '.join(sections)}.")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise IIFError(f"config section {name!r} must be a mapping of keys to values; got {values!r}.")
        _set_section(getattr(cfg, name), values, name)


def merge_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """:func:`~iif.train.config.apply_overrides` without the validation, for any dataclass of sections (the
    classification :class:`~iif.train.config.TrainConfig`, the detection config): parses, type-checks and sets
    each ``section.key=value``."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise IIFError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=0.05).")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise IIFError(f"override key {key!r} must name a section and a key, e.g. optim.lr=0.05.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except RecursionError:
            raise IIFError(f"override {key.strip()!r}: the value is nested too deeply to read.") from None
        except yaml.YAMLError as exc:
            what = getattr(exc, "problem", None) or type(exc).__name__
            raise IIFError(f"cannot parse the value of override {item!r} ({what}); quote strings and close "
                           "brackets, e.g. schedule.milestones=[30,40].") from None
        if len(parts) == 2:
            _merge(cfg, {parts[0]: {parts[1]: value}})
        else:
            sections = [f.name for f in dataclasses.fields(cfg)]
            if parts[0] not in sections:
                raise IIFError(f"unknown config section {parts[0]!r}.{suggest(parts[0], sections)}")
            section = getattr(cfg, parts[0])
            names = [f.name for f in dataclasses.fields(section)]
            if parts[1] not in names:
                raise IIFError(f"unknown config key {parts[0] + '.' + parts[1]!r}.{suggest(parts[1], names)}")
            current = getattr(section, parts[1])
            if not isinstance(current, dict):
                raise IIFError(f"override {key!r}: {parts[0]}.{parts[1]} is not a mapping, so it has no sub-keys.")
            target = current
            for p in parts[2:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
    return cfg


# Packaged detection configs carry this prefix (``iif det-train``); the classification commands skip them.
DETECTION_PREFIX = "det_"
# Packaged benchmark suites (what a benchmark command iterates: ``bench_detection``, det-bench's presets and
# rows); neither ``iif train`` nor ``iif det-train`` lists them.
BENCH_PREFIX = "bench_"


def packaged_configs(kind: str = "classification") -> list[str]:
    """Short names of the configs shipped in ``iif/configs``: ``kind="classification"`` (``iif train``),
    ``"detection"`` (``iif det-train``, names starting ``det_``), ``"bench"`` (benchmark suites, names starting
    ``bench_``) or ``"all"``."""
    root = resources.files("iif").joinpath("configs")
    try:
        names = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if kind == "all":
        return names
    prefix = {"detection": DETECTION_PREFIX, "bench": BENCH_PREFIX}.get(kind)
    if prefix is not None:
        return [n for n in names if n.startswith(prefix)]
    return [n for n in names if not n.startswith((DETECTION_PREFIX, BENCH_PREFIX))]


def resolve_config_path(name_or_path: str | os.PathLike, kind: str = "classification") -> Path:
    """A YAML path, or the packaged config with that short name (``cifar100_lt_decoupled``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    short = p.name[:-5] if p.name.endswith(".yaml") else p.name
    candidate = resources.files("iif").joinpath("configs", f"{short}.yaml")
    if candidate.is_file():
        return Path(str(candidate))
    names = packaged_configs(kind)
    raise IIFError(f"config {str(name_or_path)!r} is neither a file nor a packaged config.{suggest(short, names)} "
                   f"Packaged configs: {', '.join(names) or '(none)'}.")


def load_sections(schema: type, source: Any = None, overrides: Iterable[str] = (), validate: Any = None,
                  kind: str = "classification") -> Any:
    """Defaults of the dataclass ``schema``, then a YAML file / packaged short name (``base:`` chains
    followed) / dict / instance ``source``, then ``section.key=value`` ``overrides``, then ``validate(cfg)``.
    The one loader behind :func:`~iif.train.config.load_config` and
    :func:`iif.detection.config.load_detection_config`."""
    cfg = schema()
    if isinstance(source, schema):
        cfg = copy.deepcopy(source)
    elif isinstance(source, Mapping):
        _merge(cfg, dict(source))
    elif source is not None:
        data = read_config_yaml(resolve_config_path(source, kind))
        if kind == "classification" and _is_detection(data):
            raise IIFError(f"config {str(source)!r} is a detection config (it has a 'margin' section); run it with "
                           "`iif det-train`.")
        _merge(cfg, data)
    merge_overrides(cfg, overrides)
    return validate(cfg) if validate is not None else cfg


def _is_detection(data: Mapping) -> bool:
    """A config's sections are a detection config's when they have a ``margin`` section (detection's own)."""
    return "margin" in data


def is_detection_config(source: str | os.PathLike, kind: str = "classification") -> bool:
    """Whether a YAML path / packaged short name is a detection config (``iif det-train``'s), not a classifier's
    (``kind``: which packaged configs an unknown name's error lists)."""
    return _is_detection(read_config_yaml(resolve_config_path(source, kind)))


def read_config_yaml(path: str | os.PathLike) -> dict:
    """The sections of a YAML config file with its ``base:`` chain merged in (one-line :class:`IIFError` for
    non-UTF-8 text, bad YAML, nesting too deep, a base cycle)."""
    return _read_yaml_with_base(Path(path))


def _read_yaml_with_base(path: Path, depth: int = 0) -> dict:
    import yaml

    if depth > 8:
        raise IIFError(f"config {path} has a 'base:' chain deeper than 8; look for a cycle.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise IIFError(f"config {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    except RecursionError:
        raise IIFError(f"config {path} is nested too deeply to read; a config is sections of key: value pairs.") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        raise IIFError(f"config {path} is not valid YAML{at}: {what}; fix the YAML syntax there.") from None
    if not isinstance(data, dict):
        raise IIFError(f"config {path} must be a mapping of sections; got {type(data).__name__}.")
    data.pop("description", None)  # one line shown by `iif train --list`; not a setting, not inherited
    base = data.pop("base", None)
    if base is None:
        return data
    rel = path.parent / (str(base) if str(base).endswith(".yaml") else f"{base}.yaml")
    merged = _read_yaml_with_base(rel if rel.is_file() else resolve_config_path(base), depth + 1)
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged
