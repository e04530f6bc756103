"""The ``iif`` command line: one sub-command per module in this package.

Each sub-command module defines ``register(subparsers)``, which adds its parser and sets
``func=run``. Bad input (:class:`iif.IIFError`, missing files) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import IIFError

# Sub-command modules, in the order ``iif --help`` lists them.
COMMANDS = ("stats", "weights", "train", "eval", "bench", "posthoc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iif", description="Inverse Image Frequency for long-tailed image recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (IIFError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"iif {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iif {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a reader that closed early (``iif stats x | head``): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
