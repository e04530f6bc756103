"""Writing outputs safely: atomic files, and one policy for every command that writes a folder.

Files
    :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` and
    :func:`atomic_torch_save` write to a temporary file in the destination's folder
    (``.<name>.<random>.iif-tmp``), flush and ``fsync`` it, give it the mode an ordinary ``open`` would
    (``0o666 & ~umask``; ``mkstemp`` alone creates ``0600``) and move it over the destination with
    ``os.replace``. A reader (or a run killed at any instant) sees the old file or the new one, never a
    truncated one.

Output folders (``iif train``, ``iif bench``, ``iif det-bench``, ``iif det-data``)
    * a folder is recognised as ours by its marker file :data:`MARKER` (``.iif-output.json``: command,
      iif version, creation time);
    * a new run refuses an ``--out`` that is an existing file, or a non-empty folder (a finished run
      included), naming what is there and the flags (``--resume`` / ``--force`` / another ``--out``);
    * ``--resume`` (train, det-train) continues only a folder with our marker of the same command;
    * ``--force`` replaces only a folder that carries our marker naming the same command; anything else is
      refused, since it may hold the user's own files or another command's output;
    * replacement is crash-safe: the new output is built in a staging folder beside the old one
      (``.<name>.iif-stage-<random>``) and swapped in with one ``renameat2(RENAME_EXCHANGE)`` system call,
      so the old output stays readable until the new one is complete and a kill at any instant leaves
      the old or the new output under the requested name. Where the kernel, C library or file system
      cannot exchange (not Linux, or ``EINVAL``/``ENOSYS``), the fallback is two renames (old ->
      ``.<name>.iif-old-<random>``, staging -> name); a kill between them leaves no folder under the name
      for that instant, and the next run of the same folder renames the old output back first;
    * stale temporaries of the same folder left by killed runs (names matching our patterns AND holding
      our marker, or empty) are removed by the next run of that folder; temporary files inside a run
      folder (``*.iif-tmp``) are removed when the run is resumed;
    * folders are created with ``0o777 & ~umask`` and files with ``0o666 & ~umask``.

Outputs never touch inputs (:func:`refuse_overlap`, called by every command before any work)
    * an output (``--out``, ``--json``, ``--save-logits``, ``--detections``, ``--output``) is refused when
      its real path (symlinks and ``..`` resolved) equals an input, contains one (a folder that would be
      replaced holding it) or lies inside an input *data* folder (dataset root, image folder, logits folder,
      benchmark); two outputs of one command may not overlap either;
    * the one exception: a *run folder* (the folder holding the checkpoint a command reads) may receive new
      files (``iif eval RUN`` writes ``RUN/eval_test.json``), but the files it reads there (checkpoint,
      ``config.yaml``) and the folder itself are still refused as outputs;
    * ``--force`` replaces only a folder whose marker names the same command, and the final swap checks the
      destination again at that moment (still ours, same command, not an input): a folder put there while
      the run worked is never moved aside.

For tests, ``IIF_FAULT_KILL_AT=N`` sends SIGKILL to the process itself at the N-th write step (every
atomic write, rename, swap and clean-up counts one), and ``IIF_FAULT_TRACE=FILE`` appends one line per
step to FILE; both are read on every step and cost nothing when unset.

Modules (this package re-exports every public name, so ``from iif.outputs import X`` is the import path)
    :mod:`~iif.outputs.atomic` (atomic files, fault points), :mod:`~iif.outputs.marker` (the marker file),
    :mod:`~iif.outputs.swap` (swapping into place, stale temporaries), :mod:`~iif.outputs.overlap`
    (:func:`refuse_overlap`), :mod:`~iif.outputs.folder` (:class:`OutputFolder`) and
    :mod:`~iif.outputs.run_folder` (resumable run folders).
"""

from __future__ import annotations

from .atomic import (TMP_SUFFIX, PathLike, atomic_torch_save, atomic_write_bytes, atomic_write_json,
                     atomic_write_stream, atomic_write_text, current_umask, json_safe, make_folder)
from .folder import OutputFolder
from .marker import MARKER, manifest, read_marker, write_marker
from .overlap import RUN_FILES, PathPairs, checkpoint_inputs, refuse_overlap
from .run_folder import (RESUMABLE, abandon_run_folder, abandoned_on_failure, check_run_folder, finish_run_folder,
                         made_by_run, prepare_run_folder, staged_outputs)
from .swap import RENAME_EXCHANGE, RENAME_NOREPLACE, clean_stale_temporaries, exchange_paths

__all__ = [
    "MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
    "atomic_torch_save",
    "atomic_write_stream",
    "current_umask",
    "make_folder",
    "read_marker",
    "manifest",
    "write_marker",
    "exchange_paths",
    "OutputFolder",
    "check_run_folder",
    "prepare_run_folder",
    "finish_run_folder",
    "abandon_run_folder",
    "abandoned_on_failure",
    "made_by_run",
    "clean_stale_temporaries",
    "refuse_overlap",
    "checkpoint_inputs",
    "staged_outputs",
]
