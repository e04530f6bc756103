"""The run folder of :func:`iif.detection.runs.train_from_config` (``iif det-train``): opening it under the
folder policy of :func:`iif.outputs.prepare_run_folder` (rank 0 prepares it, every DDP rank learns it:
:func:`iif.runtime.distributed.on_main_rank`), and training into it so that a failure before the first checkpoint
leaves nothing a rerun must ``--force`` (:func:`iif.outputs.abandoned_on_failure`); ``iif train`` opens its run
folder with the same pieces (:func:`iif.train.engine.fit`).

Moved out of :mod:`iif.detection.runs` (issue 16), which re-exports ``CONFIG_FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import IIFError
from .config import DetectionConfig, detection_config_hash, load_detection_config

__all__ = ["CONFIG_FILE"]

CONFIG_FILE = "config.yaml"


def _open_run_folder(cfg: DetectionConfig, out: Path, info, h: str, *, resume: bool, force: bool
                     ) -> tuple[Path, bool]:
    """:func:`train_from_config`'s working folder (rank 0 prepares it; under DDP every rank learns it, or rank
    0's error: :func:`iif.runtime.distributed.on_main_rank`) with the config saved in it; returns ``(folder,
    created)``, ``created`` when the run made it (a new ``out`` or a staging folder), so a failure may remove it."""
    from ..outputs import abandoned_on_failure, made_by_run, prepare_run_folder
    from ..runtime import check_same_settings
    from ..runtime.distributed import on_main_rank
    from ..train.config import save_config

    def prepare() -> str:
        work = prepare_run_folder(out, "det-train", force=force and not resume, resume=resume)
        saved = work / CONFIG_FILE
        if resume and saved.is_file() and not force:  # the one resume rule (iif.runtime), on the saved config
            check_same_settings(detection_config_hash(load_detection_config(saved)), h, message=(
                f"--resume: {out} was trained with another config ({saved}); run with the same config and "
                "overrides, add --force to resume anyway, or choose another --out."))
        return str(work)

    existed = out.is_dir()
    work = Path(on_main_rank(info, prepare))
    if not info.is_main and not work.is_dir():  # a rank that cannot see rank 0's folder
        raise IIFError(str(work))
    created = made_by_run(work, out, existed)
    with abandoned_on_failure(work, created=created, written=(CONFIG_FILE,), owner=info.is_main):
        if info.is_main:
            save_config(cfg, work / CONFIG_FILE)
    return work, created


def _fit(model, train, cfg: DetectionConfig, sched: dict, sampler, dev: str, work: Path, created: bool, *,
         resume: bool, log: Callable[[str], Any], info, epoch_end=None) -> dict[str, Any]:
    """``train_detector`` on the run's schedule into ``work`` (``epoch_end``: its per-epoch hook, FASA's sampling
    adaptation); a failure before the first checkpoint leaves nothing a rerun must ``--force`` (rank 0 abandons
    the folder)."""
    from ..outputs import abandoned_on_failure
    from .engine import train_detector

    s = cfg.schedule
    # failed before its first checkpoint (last.pt): rank 0 leaves nothing a rerun must --force
    with abandoned_on_failure(work, created=created, written=(CONFIG_FILE, "history.json"), owner=info.is_main):
        return train_detector(model, train, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum,
                              weight_decay=s.weight_decay, warmup_iters=sched["warmup_iters"], warmup_factor=s.warmup_factor,
                              milestones=sched["milestones"], gamma=s.gamma, clip_grad_norm=s.clip_grad_norm, sampler=sampler,
                              device=dev, amp=cfg.runtime.amp, out_dir=work, resume=resume, log=log,
                              log_every=cfg.runtime.log_every, num_workers=cfg.runtime.workers, seed=cfg.runtime.seed,
                              stop_after_epoch=cfg.runtime.stop_after_epoch, epoch_end=epoch_end)
