"""The run folder of :func:`iif.detection.runs.train_from_config` (``iif det-train``): opening it under the
folder policy of :func:`iif.outputs.prepare_run_folder` (rank 0 prepares it, every DDP rank learns it), and
training into it so that a failure before the first checkpoint leaves nothing a rerun must ``--force``.

Moved out of :mod:`iif.detection.runs` (issue 16), which re-exports ``CONFIG_FILE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import IIFError
from .config import DetectionConfig, detection_config_hash, load_detection_config

__all__ = ["CONFIG_FILE"]

CONFIG_FILE = "config.yaml"


def _open_run_folder(cfg: DetectionConfig, out: Path, info, h: str, *, resume: bool, force: bool
                     ) -> tuple[Path, bool]:
    """:func:`train_from_config`'s working folder (rank 0 prepares it; under DDP every rank learns it, or rank
    0's error) with the config saved in it; returns ``(folder, created)``, ``created`` when the run made it
    (a new ``out`` or a staging folder), so a failure may remove it."""
    from ..outputs import abandon_run_folder, prepare_run_folder
    from ..train.config import save_config

    work: Path | None = None
    problem = None
    existed = out.is_dir()
    if info.is_main:
        try:
            work = prepare_run_folder(out, "det-train", force=force and not resume, resume=resume)
            saved = work / CONFIG_FILE
            if resume and saved.is_file() and not force:
                old = load_detection_config(saved)
                if detection_config_hash(old) != h:
                    raise IIFError(f"--resume: {out} was trained with another config ({saved}); run with the same "
                                   "config and overrides, add --force to resume anyway, or choose another --out.")
        except IIFError as exc:
            if not info.distributed:
                raise
            problem = str(exc)
    if info.distributed:  # every rank learns the folder rank 0 chose (a staging folder under --force), or its error
        import torch.distributed as dist

        box = [problem if problem is not None else (str(work) if work is not None else None)]
        dist.broadcast_object_list(box, src=0)
        if problem is not None or (not info.is_main and box[0] is not None and not Path(box[0]).is_dir()):
            raise IIFError(box[0])
        work = Path(box[0])
    assert work is not None
    created = not existed or os.path.abspath(work) != os.path.abspath(out)
    try:
        if info.is_main:
            save_config(cfg, work / CONFIG_FILE)
    except BaseException:
        if info.is_main:
            abandon_run_folder(work, created=created, written=(CONFIG_FILE,))
        raise
    return work, created


def _fit(model, train, cfg: DetectionConfig, sched: dict, sampler, dev: str, work: Path, created: bool, *,
         resume: bool, log: Callable[[str], Any], info) -> dict[str, Any]:
    """``train_detector`` on the run's schedule into ``work``; a failure before the first checkpoint leaves
    nothing a rerun must ``--force`` (rank 0 abandons the folder)."""
    from ..outputs import abandon_run_folder
    from .engine import train_detector

    s = cfg.schedule
    try:
        res = train_detector(model, train, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum,
                             weight_decay=s.weight_decay, warmup_iters=sched["warmup_iters"], warmup_factor=s.warmup_factor,
                             milestones=sched["milestones"], gamma=s.gamma, clip_grad_norm=s.clip_grad_norm, sampler=sampler,
                             device=dev, amp=cfg.runtime.amp, out_dir=work, resume=resume, log=log,
                             log_every=cfg.runtime.log_every, num_workers=cfg.runtime.workers, seed=cfg.runtime.seed,
                             stop_after_epoch=cfg.runtime.stop_after_epoch)
    except BaseException:
        if info.is_main:  # failed before its first checkpoint (last.pt): leave nothing a rerun must --force
            abandon_run_folder(work, created=created, written=(CONFIG_FILE, "history.json"))
        raise
    return res
