"""The ``iif`` command line: one sub-command per module in this package.

Each sub-command module defines ``register(subparsers)``, which adds its parser and sets
``func=run``. :func:`main` is the one error boundary: bad input (:class:`iif.IIFError`), unreadable files,
undecodable text, numbers too large, a missing optional extra print one line (``iif <cmd>: error: ...``) on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys

from ..errors import IIFError

# Sub-command modules, in the order ``iif --help`` lists them.
COMMANDS = ("stats", "weights", "train", "eval", "posthoc", "predict", "explain", "bench", "det-data", "det-bench", "det-train", "det-eval")


# Errors the CLI boundary turns into one line on stderr and exit status 2 (the library raises IIFError for bad
# input; the others are the safety net for what slips through: unreadable files, undecodable text, numbers
# that do not fit, memory, a missing optional dependency).
BOUNDARY_ERRORS: tuple[type[BaseException], ...] = (IIFError, OSError, UnicodeError, OverflowError,
                                                    json.JSONDecodeError, MemoryError, ImportError)

# Optional dependency (top-level module name) -> the extra of ``pip install "iif[...]"`` that brings it.
EXTRAS = {"torchvision": "train", "yaml": "train", "tqdm": "train", "matplotlib": "train", "sklearn": "train",
          "PIL": "train", "pycocotools": "coco", "faster_coco_eval": "detection", "tidecv": "detection",
          "timm": "timm", "lvis": "dev",
          "captum": "explain"}


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


# torch's DataLoader re-raises a worker's exception with the worker's traceback in its text
# ("Caught IIFError in DataLoader worker process 0.\nOriginal Traceback (most recent call last): ...").
_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\s*\nOriginal Traceback")


def original_message(text: str) -> str:
    """``text`` of an exception torch's DataLoader re-raised from a worker, reduced to the original error's
    message (the last ``Name: message`` line of the worker's traceback and any lines after it); any other text
    unchanged."""
    m = _WORKER_ERROR.match(text)
    if not m:
        return text
    name, lines = m.group(1), text.splitlines()
    for i in range(len(lines) - 1, 0, -1):
        head, sep, rest = lines[i].partition(": ")
        if sep and not lines[i].startswith(" ") and (head == name or head.endswith("." + name)):
            return "\n".join([rest] + lines[i + 1:])
    return text


def error_line(exc: BaseException) -> str:
    """The one-line message the CLI prints for ``exc`` (one of :data:`BOUNDARY_ERRORS`): problem and fix. An
    error a DataLoader worker raised is reduced to its own message (:func:`original_message`)."""
    if isinstance(exc, IIFError):
        return _one_line(original_message(str(exc)))
    if isinstance(exc, ImportError):
        module = (exc.name or "").split(".")[0]
        if module in EXTRAS:
            return (f"this needs the optional package {module!r}, which is not installed; "
                    f"install it with: pip install \"iif[{EXTRAS[module]}]\"")
        return _one_line(f"cannot import {exc.name or ''} ({exc}); reinstall iif with pip install --force-reinstall iif")
    if isinstance(exc, UnicodeError):
        where = f" ({exc.reason} at byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
        return f"an input file is not UTF-8 text{where}; save config, list and json files as UTF-8"
    if isinstance(exc, OSError):
        target = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        reason = exc.strerror or _one_line(exc) or type(exc).__name__
        return f"{target}{reason}; check the path, its permissions and free disk space"
    if isinstance(exc, OverflowError):
        return f"a number is too large ({_one_line(exc)}); use values that fit a 64-bit integer or float"
    if isinstance(exc, MemoryError):
        return "out of memory; check the sizes in the input (class labels, counts, batch size) and lower them"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; fix or re-export the file"
    return _one_line(f"{type(exc).__name__}: {original_message(str(exc))}")


def package_version() -> str:
    """The installed package's version (importlib.metadata), else the source tree's ``iif.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iif")
    except PackageNotFoundError:
        from .. import __version__

        return str(__version__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iif", description="Inverse Image Frequency for long-tailed image recognition.")
    parser.add_argument("--version", action="version", version=f"iif {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)  # det-data -> det_data
    _plain_help(parser)
    return parser


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :func:`iif.x` -> iif.x


def plain_text(text: str | None) -> str | None:
    """``text`` without reStructuredText markup (roles, ``literals``, `quotes`), as --help prints it."""
    if not text:
        return text
    return _ROLE.sub(r"\1", text).replace("``", "").replace("`", "")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    # Module docstrings double as --help descriptions; strip their markup once here for every sub-command.
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        action.help = plain_text(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help)
            for sub in set(action.choices.values()):
                _plain_help(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # KEY=VALUE overrides may follow options (`iif det-bench --seeds 3 generator=2 --out o threads=1`):
        # argparse gives a positional list only its first run, so later runs are appended here, in order.
        if isinstance(getattr(args, "overrides", None), list) and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = args.overrides + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        again = " --resume" if args.command in ("train", "det-train") else ""
        print(f"iif {args.command}: interrupted; run the same command{again} again to continue "
              "(an interrupted download is checked and fetched again)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a reader that closed early (``iif stats x | head``): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BOUNDARY_ERRORS as exc:
        print(f"iif {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
