"""The examples in README.md and docs/*.md run as written: the Python blocks and the shell commands.

Python: each ```python block is executed in a fresh namespace inside a temporary working directory, so an
example that stops working (a renamed function, a changed signature) fails the suite. Blocks fenced as
```python no-run are shown to readers but not executed (they need data a user downloads).

Shell: every command of every ```bash block runs, in order, in one temporary folder per document (so a
walk-through's later commands see what its earlier ones wrote), with ``HOME`` pointing there and
``~/my_images`` (and ``my_images/``) a tiny long-tailed ImageFolder tree. ``iif`` commands run in-process
through :func:`iif.cli.main` (so the whole file stays fast); file set-up commands (:data:`SHELL_SETUP`:
``mkdir``, ``printf``...) run in bash. Commands that need a download, a GPU, several processes or minutes of
training are skipped, each by a rule in :data:`SKIP` that states why, and so is any other program (a
benchmark script, an installer), except the data-making scripts of :data:`DOC_SCRIPTS`. Detection commands
run only in the own-COCO walk-through (they name ``my_coco``), and :data:`WROTE` checks what it wrote (AP_r a
number). To keep training commands to seconds, ``iif train`` and
``iif bench`` get the overrides in :data:`FAST` appended (fewer epochs; the command is otherwise as
written). A command that fails (non-zero exit) fails the test with its output.
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell)[ \t]*\n(.*?)^```", re.S | re.M)

#: (pattern searched in the command, why it is not run here). First match wins.
SKIP: list[tuple[str, str]] = [
    (r"\bpip install\b", "installs packages from the network"),
    (r"^torchrun\b", "starts several processes (GPUs)"),
    (r"--device cuda|runtime\.device=cuda|--preset gpu", "needs a GPU"),
    (r"data\.root=~/data\b|--data ~/data\b|\bdata/lvis/|\bdata/ImageNet_LT/", "needs a downloaded dataset"),
    (r"\bruns/c100_dec\b", "uses the checkpoint of the CIFAR-100-LT run above, which needs the download"),
    (r"^iif det-(data|bench|train|eval)\b(?!.*\bmy_coco\b)", "detection: builds the offline benchmark or trains Mask R-CNNs on it (minutes each)"),
    (r"^iif weights train/ ", "train/ stands for the reader's own dataset folder"),
]

#: (pattern, options, overrides) added to commands (first match wins) so that they train for seconds: the
#: options right after the sub-command, the ``key=value`` overrides beside the command's own.
FAST: list[tuple[str, list[str], list[str]]] = [
    (r"^iif train (?!.*--list)(?!.*--print-config)\S", [], ["schedule.epochs=1", "schedule.warmup_epochs=0", "decoupled.epochs=1"]),
    (r"^iif bench\b", ["--quick", "--heads", "linear"], ["schedule.epochs=1", "decoupled.epochs=1"]),
    # the own-COCO walk-through of detection-training.md: one epoch on a category-covering 48-image prefix
    (r"^iif det-train .*\bmy_coco\b", [], ["schedule.epochs=1", "data.max_train_images=48", "data.max_val_images=16"]),
    (r"^iif det-bench .*\bmy_coco\b", [], ["train.epochs=1", "max_train_images=48", "max_val_images=16"]),
]

#: Scripts of this repository that a walk-through runs to make its data (``python SCRIPT ...``, run with this
#: interpreter from the repository, in the walk-through's folder).
DOC_SCRIPTS = ("benchmarks/make_det_json.py",)


# --------------------------------------------------------------------------------------------- python blocks
def _blocks():
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            yield pytest.param(code, id=f"{doc.name}-{i}")


def test_docs_have_examples():
    assert any(True for _ in _blocks()), "README.md should carry at least one runnable example"


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_example_runs(code, tmp_path, monkeypatch):
    """The block runs, and each ``print(...)  # VALUE`` line prints what its comment says: the printed text
    starts the comment (which may go on to explain it: ``# 30.0 = n_max / n_min``)."""
    monkeypatch.chdir(tmp_path)
    printed: dict[int, list[str]] = {}

    def doc_print(line, *args, **kwargs):
        printed.setdefault(line, []).append(" ".join(str(a) for a in args))
        print(*args, **kwargs)

    source, expected = _checked_prints(code)
    exec(compile(source, "<doc example>", "exec"), {"__name__": "__doc_example__", "__doc_print": doc_print})
    for line, comment in expected.items():
        got = printed.get(line, [])
        assert got and all(_printed_as_commented(g, comment) for g in got), \
            f"doc example line {line}: printed {got}, its comment says {comment!r}"


PRINT_WITH_COMMENT = re.compile(r"^(\s*)print\((.*)\)\s+#\s*(\S.*)$")


def _checked_prints(code: str) -> tuple[str, dict[int, str]]:
    """``code`` with each ``print(...)  # VALUE`` line calling ``__doc_print(lineno, ...)``, and the
    comments by line number."""
    lines, expected = code.splitlines(), {}
    for i, text in enumerate(lines, 1):
        m = PRINT_WITH_COMMENT.match(text)
        if m:
            lines[i - 1] = f"{m.group(1)}__doc_print({i}, {m.group(2)})"
            expected[i] = m.group(3).strip()
    return "\n".join(lines) + "\n", expected


def test_print_comment_rule():
    source, expected = _checked_prints("x = 2\nprint(x, [1, 2])  # 2 [1, 2]: a note\nprint(x)\n  print(x)  # ln(2)\n")
    assert expected == {2: "2 [1, 2]: a note", 4: "ln(2)"}
    assert source.splitlines()[1] == "__doc_print(2, x, [1, 2])" and source.splitlines()[3] == "  __doc_print(4, x)"
    assert _printed_as_commented("[500 50 5] 100.0", "[500  50   5] 100.0")
    assert _printed_as_commented("2", "2 categories checked") and not _printed_as_commented("2", "20 categories")
    assert not _printed_as_commented("[5 50 500]", "[500 50 5]") and not _printed_as_commented("30.5", "30.0 = n_max")
    assert _printed_as_commented("tensor([0.51])", "ln(5/3)") and _printed_as_commented("x", "[1.0, w_a] (order)")


def _printed_as_commented(printed: str, comment: str) -> bool:
    """The comment starts with the printed text, then ends or goes on with a space, a colon or a comma.
    A comment that does not open with a value (a number, a list, a tuple, a string, ``tensor(``...), or whose
    opening value holds names (``# [1.0, w_apple, w_bus]``), is prose (``# ln(5/3), ln(5/1)``): not compared."""
    printed = " ".join(printed.split())
    comment = " ".join(comment.split())
    if not re.match(r"[-\d\[('\"{]|tensor\(|True\b|False\b|None\b|inf\b|nan\b", comment):
        return True
    head = re.sub(r"'[^']*'|\"[^\"]*\"", "''", comment)
    close = {"[": "]", "(": ")", "{": "}"}.get(head[0])
    head = head[:head.find(close) + 1] if close and close in head else head.split()[0]
    if re.search(r"\b(?!(?:tensor|True|False|None|inf|nan)\b)[A-Za-z_]\w*", head):
        return True
    return comment.startswith(printed) and comment[len(printed):len(printed) + 1] in ("", " ", ":", ",")


# ---------------------------------------------------------------------------------------------- shell blocks
def shell_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks of a document, in order: continuation lines joined, blank and
    comment-only lines dropped (a trailing ``# comment`` is kept; bash and :func:`shlex.split` drop it)."""
    out = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line and not line.startswith("#"):
                out.append(line)
    return out


#: Programs other than ``iif`` that the shell test runs: setting up files for the ``iif`` commands after them.
SHELL_SETUP = ("mkdir", "touch", "printf", "echo", "cat", "ls", "cp", "head")


def skip_reason(command: str) -> str | None:
    why = next((why for pattern, why in SKIP if re.search(pattern, command)), None)
    if why is None and _doc_script(command) is not None:
        return None
    if why is None and not command.startswith("iif ") and command.split()[0] not in SHELL_SETUP:
        why = "not an iif command or file set-up (e.g. a benchmark script whose numbers the text gives)"
    return why


def _doc_script(command: str) -> list[str] | None:
    """``[python, ROOT/script, args...]`` for ``python <one of DOC_SCRIPTS> args...``, else None."""
    import sys

    argv = shlex.split(command, comments=True)
    if len(argv) >= 2 and argv[0] in ("python", "python3") and argv[1] in DOC_SCRIPTS:
        return [sys.executable, str(ROOT / argv[1]), *argv[2:]]
    return None


def _own_coco_walkthrough_wrote_ap_r(home: Path) -> None:
    """detection-training.md's own-COCO walk-through: det-bench's rows have a number for AP_r, and its
    report counts rare categories (groups from the training json's image counts)."""
    import json

    rows = json.loads((home / "det-bench-my_coco" / "results.json").read_text())
    assert rows and all(isinstance(r["APr"], float) for r in rows), rows
    report = (home / "det-bench-my_coco" / "report.md").read_text()
    assert re.search(r"\(([1-9]\d*) rare, \d+ common, \d+ frequent", report), report[:2000]
    assert "best IIF row by AP_r" in report and (home / "det-bench-my_coco" / "fp_vs_rare_ap.png").is_file()


#: What a document's walk-through must have written, checked after its commands ran.
WROTE = {"detection-training.md": _own_coco_walkthrough_wrote_ap_r}


def fast_argv(command: str, argv: list[str]) -> list[str]:
    """``argv`` (after ``iif``) with the :data:`FAST` options and overrides for ``command`` added."""
    options, overrides = next(((o, v) for p, o, v in FAST if re.search(p, command)), ([], []))
    argv = [argv[0], *options, *argv[1:]]
    keys = [i for i, t in enumerate(argv) if "=" in t and not t.startswith("-")]
    config = next((i for i, t in enumerate(argv[1:], 1) if not t.startswith("-")), len(argv) - 1)
    at = keys[-1] + 1 if keys else (config + 1 if argv[0] == "train" else len(argv))  # after the config name
    return argv[:at] + overrides + argv[at:]


def _docs_with_commands():
    for doc in DOCS:
        if shell_commands(doc.read_text()):
            yield pytest.param(doc, id=doc.name)


def _tiny_tree(root: Path) -> None:
    """``root/train/<class>`` with 12, 6 and 3 images, ``root/test/<class>`` with 2 each: 8x8 RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", (12, 6, 3)), ("test", (2, 2, 2))):
        for k, n in enumerate(counts):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 60, (8, 8, 3)) + 90 * k  # classes differ in brightness
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.png")


def _run_iif(argv: list[str], capsys) -> tuple[int, str]:
    from iif.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: bad usage, --help, --version
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    if not rc:  # exit 0 is not enough: the command must also have done something
        missing = _took_no_effect(argv, out.out + out.err)
        assert not missing, f"`iif {' '.join(argv)}` exited 0 but: {'; '.join(missing)}"
    return int(rc or 0), out.out[-3000:] + out.err[-3000:]


#: Options naming a file or folder that the command writes.
OUTPUT_OPTIONS = ("--out", "--save-logits", "--json")


def _took_no_effect(argv: list[str], printed: str) -> list[str]:
    """What a doc command that exited 0 failed to produce (empty: it took effect). Each output it names
    (:data:`OUTPUT_OPTIONS`, relative to the walk-through's folder) exists, a folder holds files, every
    ``.json`` in it parses and every ``.csv`` has a header and a row; a command naming no output printed
    something (a table, a config list, the weights)."""
    import json

    named = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t in OUTPUT_OPTIONS]
    named += [t.split("=", 1)[1] for t in argv if "=" in t and t.split("=", 1)[0] in OUTPUT_OPTIONS]
    if not named:
        return [] if printed.strip() else ["it printed nothing and names no output"]
    problems = []
    for name in named:
        path = Path(name)
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
        if not files:
            problems.append(f"{name} was not written")
        for f in files:
            if f.suffix == ".json":
                try:
                    json.loads(f.read_text())
                except ValueError as exc:
                    problems.append(f"{f} is not JSON ({exc})")
            elif f.suffix == ".csv" and len(f.read_text().splitlines()) < 2:
                problems.append(f"{f} has no header and row")
    return problems


def test_shell_command_parsing():
    text = "x\n```bash\n# only a comment\niif train a \\\n    b=1   # note\n\nmkdir -p d\n```\n```python\nno\n```\n"
    assert shell_commands(text) == ["iif train a b=1 # note", "mkdir -p d"]
    assert shlex.split("iif train a b=1 # note", comments=True) == ["iif", "train", "a", "b=1"]
    assert skip_reason("torchrun --nproc_per_node 4 x") == "starts several processes (GPUs)"
    assert skip_reason("iif train digits_lt_e2e") is None and skip_reason("mkdir -p pets/train") is None
    assert skip_reason("python benchmarks/bench_loss.py").startswith("not an iif command")
    fast = fast_argv("iif train x", ["train", "x", "--out", "o"])
    assert fast == ["train", "x", "schedule.epochs=1", "schedule.warmup_epochs=0", "decoupled.epochs=1", "--out", "o"]
    fast = fast_argv("iif bench --dataset f", ["bench", "--dataset", "f", "a.b=1", "--out", "o"])
    assert fast == ["bench", "--quick", "--heads", "linear", "--dataset", "f", "a.b=1", "schedule.epochs=1",
                    "decoupled.epochs=1", "--out", "o"]


@pytest.mark.parametrize("doc", list(_docs_with_commands()))
def test_doc_shell_commands_run(doc, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    _tiny_tree(home / "my_images")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("IIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(home)
    ran = 0
    for command in shell_commands(doc.read_text()):
        if skip_reason(command):
            continue
        if command.startswith("iif "):
            argv = [os.path.expanduser(t) if t.startswith("~") else t
                    for t in shlex.split(command, comments=True)[1:]]
            rc, output = _run_iif(fast_argv(command, argv), capsys)
        else:
            script = _doc_script(command)
            p = subprocess.run(script or ["bash", "-c", command], cwd=home, capture_output=True, text=True,
                               timeout=60)
            rc, output = p.returncode, p.stdout[-3000:] + p.stderr[-3000:]
        assert rc == 0, f"{doc.name}: `{command}` exited with {rc}:\n{output}"
        ran += 1
    assert ran or all(skip_reason(c) for c in shell_commands(doc.read_text()))
    if doc.name in WROTE:
        WROTE[doc.name](home)


def test_skipped_commands_are_listed_with_their_reason():
    """Every doc command the shell test does not run, with why (see them with ``pytest -s -k skipped``);
    the rules must not swallow the commands the docs promise to run offline."""
    skipped = [(doc.name, c, skip_reason(c)) for doc in DOCS for c in shell_commands(doc.read_text()) if skip_reason(c)]
    for name, command, why in skipped:
        print(f"skipped {name}: {command}  <- {why}")
    offline = ("iif train folder data.root=~/my_images", "iif train digits_lt_e2e", "iif train --list",
               "python benchmarks/make_det_json.py", "iif det-train det_folder", "iif det-bench --quick --preset det_folder")
    assert not [c for _, c, _ in skipped if c.startswith(offline)]
