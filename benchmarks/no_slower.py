"""No slower, same numbers: two revisions of iif timed side by side in one run (issue 16, Performance).

    .venv/bin/python benchmarks/no_slower.py [--a 38d3811] [--b HEAD] [--repeats 3] [--tasks train,bench,det]

Each revision is checked out with ``git worktree add --detach`` into a temporary folder and run from its own
``src/`` (``PYTHONPATH``, the same virtual environment), one thread (``OMP_NUM_THREADS=1``). The tasks run
alternately, A B A B ..., so that a change in the load of a shared machine falls on both sides:

* ``train``: ``iif train digits_lt_e2e schedule.epochs=3 eval.every=3`` (the packaged tiny digits config);
* ``bench``: ``iif bench`` as it is by default (digits-lt, heads cosine and linear, one seed, end-to-end rows, plots);
* ``det``:   ``iif det-train det_bench_softmax`` for one epoch on 96 images of a tiny ``iif det-data``
  benchmark (generator 1, 240 train / 50 val images, made once by revision B and read by both).

Wall time of each command (start-up included) is printed as the median over the repeats per side, and the
ratio B/A as the median of the paired ratios (repeat i of B over repeat i of A) with their range. Then the
outputs are compared: every number of each run's result files must equal, bit for bit, the other revision's
(and the other repeats'); keys that hold a duration, a rate or a memory peak are left out and named.
The worktrees are removed at the end (``--keep`` keeps the folder for a look).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Task -> (iif arguments, the result files compared). "{out}" is the run's own folder, "{det}" the benchmark.
TASKS = {
    "train": (["train", "digits_lt_e2e", "schedule.epochs=3", "eval.every=3", "--out", "{out}", "--quiet"],
              ["final_metrics.json", "metrics.csv"]),
    "bench": (["bench", "--out", "{out}"], ["results.json", "summary.json", "details.json"]),
    "det": (["det-train", "det_bench_softmax", "data.root={det}", "data.max_train_images=96", "schedule.epochs=1",
             "schedule.milestones=[1]", "schedule.warmup_iters=10", "--out", "{out}", "--quiet"],
            ["final_metrics.json", "history.json", "detections.json"]),
}
DET_DATA = ["det-data", "--generator", "1", "--num-train", "240", "--num-val", "50", "--out", "{det}"]

# Leaf keys (or CSV columns) that measure the run rather than compute its result: left out of the comparison.
# Paths need no exception: every run writes to "out" in a folder of its own, so the paths read the same.
VOLATILE = ("seconds", "images_per_s", "peak_rss_mb", "wall", "elapsed", "duration")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_iif(src: Path, args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``iif ARGS`` from revision ``src`` with one thread; return its wall time and the finished process."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "iif.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done


def leaves(value, path: str = ""):
    """(path, value) for every leaf of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def is_volatile(path: str) -> bool:
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return last.endswith("_s") or any(word in last for word in VOLATILE)  # "_s": seconds, as backbone_train_s


def read_result(path: Path) -> dict[str, object]:
    """A result file as {leaf path: value}; CSV files by row and column."""
    text = path.read_text()
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return {f"[{i}].{col}": val for i, row in enumerate(rows) for col, val in row.items()}
    return dict(leaves(json.loads(text)))


def compare(first: Path, second: Path, files: list[str]) -> tuple[list[str], set[str]]:
    """Differences between two run folders (one line each) and the measurement keys that were left out."""
    diffs, skipped = [], set()
    for name in files:
        a_file, b_file = first / name, second / name
        if not (a_file.is_file() and b_file.is_file()):
            diffs.append(f"{name}: present in {'neither' if not a_file.is_file() and not b_file.is_file() else 'one'}")
            continue
        a, b = read_result(a_file), read_result(b_file)
        for key in sorted(set(a) | set(b)):
            if is_volatile(key):
                skipped.add(f"{name}:{key.rsplit('.', 1)[-1]}")
                continue
            if key not in a or key not in b:
                diffs.append(f"{name}: {key} only in {'B' if key not in a else 'A'}")
            elif a[key] != b[key] and not (a[key] != a[key] and b[key] != b[key]):  # NaN equals NaN here
                diffs.append(f"{name}: {key}: A {a[key]!r} B {b[key]!r}")
    return diffs, skipped


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or platform.uname().machine}), "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, Python {platform.python_version()}")


def timing_rows(times: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = ["| task | A median s (min-max) | B median s (min-max) | B/A median of paired ratios (min-max) |",
             "|---|---|---|---|"]
    for task, sides in times.items():
        a, b = sides["A"], sides["B"]
        if not a or not b:
            lines.append(f"| {task} | failed | failed | - |")
            continue
        ratios = [y / x for x, y in zip(a, b)]
        lines.append(f"| {task} | {statistics.median(a):.2f} ({min(a):.2f}-{max(a):.2f}) | {statistics.median(b):.2f} "
                     f"({min(b):.2f}-{max(b):.2f}) | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="38d3811", help="baseline revision (default 38d3811)")
    parser.add_argument("--b", default="HEAD", help="revision compared with it (default HEAD)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="train,bench,det", help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (worktrees are removed)")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := set(tasks) - set(TASKS):
        parser.error(f"unknown tasks {sorted(unknown)}; expected some of {', '.join(TASKS)}")
    revs = {"A": git("rev-parse", "--short=10", args.a), "B": git("rev-parse", "--short=10", args.b)}
    tmp = Path(tempfile.mkdtemp(prefix="iif-no-slower-"))
    trees = {side: tmp / f"tree-{side}" for side in revs}
    print(f"# no_slower: A = {args.a} ({revs['A']}), B = {args.b} ({revs['B']})")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}; {args.repeats} repeats, OMP_NUM_THREADS=1")
    try:
        for side, tree in trees.items():
            git("worktree", "add", "--detach", str(tree), revs[side])
        return measure(tasks, args.repeats, trees, tmp)
    finally:
        for tree in trees.values():
            if tree.exists():
                git("worktree", "remove", "--force", str(tree))
        git("worktree", "prune")
        if args.keep:
            print(f"# outputs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(tasks: list[str], repeats: int, trees: dict[str, Path], tmp: Path) -> int:
    src = {side: tree / "src" for side, tree in trees.items()}
    det = tmp / "det-data"
    if "det" in tasks:
        seconds, done = run_iif(src["B"], [a.format(det=det) for a in DET_DATA], tmp)
        if done.returncode:
            print(f"det-data failed ({done.returncode}): {done.stderr.strip()[-400:]}")
            return 1
        print(f"# det benchmark: {' '.join(DET_DATA).format(det='DET')} ({seconds:.1f} s, revision B)")
    times = {task: {"A": [], "B": []} for task in tasks}
    failures: list[str] = []
    for task in tasks:
        argv, _ = TASKS[task]
        print(f"# {task}: iif {' '.join(argv).format(out='OUT', det='DET')}")
        for rep in range(repeats):
            for side in ("A", "B"):
                cwd = tmp / task / f"{side}{rep}"
                cwd.mkdir(parents=True)
                seconds, done = run_iif(src[side], [a.format(out="out", det=det) for a in argv], cwd)
                if done.returncode:
                    failures.append(f"{task} {side}{rep}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                else:
                    times[task][side].append(seconds)
                print(f"#   {task} {side}{rep} {seconds:6.2f} s  exit {done.returncode}", flush=True)
    print()
    print("\n".join(timing_rows(times)))
    print()
    same = True
    for task in tasks:
        files = TASKS[task][1]
        pairs = [("A0", "B0")] + [(f"{s}0", f"{s}{r}") for s in ("A", "B") for r in range(1, repeats)]
        skipped: set[str] = set()
        for left, right in pairs:
            first, second = tmp / task / left / "out", tmp / task / right / "out"
            if not (first.is_dir() and second.is_dir()):
                continue
            diffs, left_out = compare(first, second, files)
            skipped |= left_out
            label = "A vs B" if left[0] != right[0] else f"{left} vs {right} (same revision)"
            if diffs:
                same = False
                print(f"{task}: {label}: {len(diffs)} numbers differ:")
                print("\n".join(f"    {d}" for d in diffs[:20]) + (f"\n    ... {len(diffs) - 20} more" if len(diffs) > 20 else ""))
            elif left[0] != right[0]:
                print(f"{task}: A vs B: identical ({', '.join(files)}; every number bit for bit)")
        if skipped:
            print(f"{task}: left out as measurements: {', '.join(sorted(skipped))}")
    for line in failures:
        print("FAILED", line)
    print("\nresults: " + ("identical" if same and not failures else "DIFFER or failed (see above)"))
    return 0 if same and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
