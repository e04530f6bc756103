"""The sections of a training config (:class:`TrainConfig`), as dataclasses with their defaults and meaning;
loaded by :func:`iif.train.config.load_config`, checked by :func:`iif.train.config.validate_config`."""

from __future__ import annotations

from dataclasses import dataclass, field



@dataclass
class DataConfig:
    """What to train on: the arguments of :func:`iif.data.build_datasets` plus loading options."""

    name: str = "digits-lt"
    root: str | None = None
    # None: the dataset's own default (CIFAR/ImageNet-style builders: 100; digits-lt: 20; folder: keep as is).
    imbalance_ratio: float | None = None
    profile: str = "exp"
    seed: int = 0
    augment: str = "none"
    val_per_class: int | None = None
    # Extra keyword arguments for build_datasets (e.g. ``train_list``/``test_list`` for ``folder``).
    options: dict = field(default_factory=dict)
    sampler: str = "random"
    # Mixup factor alpha (paper §V-B2 uses 0.2); 0 disables mixup.
    mixup_alpha: float = 0.0
    num_workers: int = 4
    # Keep a TensorImageDataset as one uint8 tensor on the training device and augment whole batches there
    # (about 4x faster on a GPU than a per-sample DataLoader). Only used when its recipe is batchable
    # (crop/flip/cutout); AutoAugment/RandAugment fall back to the DataLoader.
    resident: bool = True
    # Open and decode every image file of a folder/list dataset once before training (results cached by
    # path, size and mtime, see :mod:`iif.data.verify`); false skips the check.
    verify_images: bool = True
    # List datasets: follow list-file paths that are absolute or climb out of ``root`` with ``..``.
    allow_outside_root: bool = False


@dataclass
class ModelConfig:
    """Arguments of :func:`iif.models.build_model`."""

    arch: str = "small_cnn"
    head: str = "linear"
    pretrained: bool = False
    # Keyword arguments for the head (e.g. ``scale: 16`` for the cosine head) and for the backbone.
    kwargs: dict = field(default_factory=dict)
    backbone_kwargs: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    """Arguments of :func:`iif.losses.build_loss`."""

    name: str = "ce"
    # IIF weight variant (Table III) for losses that use one (iif, iif_csl).
    variant: str = "smooth"
    # Normalisation of those weights: "mean" (unit mean, the end-to-end recipe: keeps the model's logit scale,
    # docs/method.md#iif-loss), a number p (divide by the p-norm, the authors' --iif_norm p) or null (paper's weights).
    norm: float | str | None = None
    label_smoothing: float = 0.0
    kwargs: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """SGD with momentum; ``batch_size`` is the global batch (divided among DDP ranks)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    batch_size: int = 64


@dataclass
class ScheduleConfig:
    """Epochs and learning-rate schedule (stepped every iteration)."""

    epochs: int = 10
    # ``multistep``, ``cosine`` or ``constant``.
    name: str = "multistep"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1


@dataclass
class StrategyConfig:
    """Which of the paper's three IIF strategies (Fig. 3): ``e2e``, ``decoupled`` or ``posthoc``."""

    name: str = "e2e"


@dataclass
class DecoupledConfig:
    """Stage 2 of the decoupled strategy (paper §V-B3): retrain only the classifier with the IIF loss.

    Stage 1 is the top-level config (normally plain CE); ``stage1_checkpoint`` skips it.
    """

    stage1_checkpoint: str | None = None
    # retrain (the classifier's parameters; IIF, cRT) or lws (frozen classifier, one learned scale per class).
    method: str = "retrain"
    epochs: int = 20
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int | None = None
    schedule: str = "constant"
    loss: str = "iif"
    variant: str = "smooth"
    loss_kwargs: dict = field(default_factory=dict)
    sampler: str = "random"
    mixup_alpha: float = 0.0
    # Re-initialise the classifier after loading the stage-1 weights.
    reinit: bool = False
    # Reproduce the authors' code: re-init BEFORE the load (so it is overwritten) and BN stats keep updating.
    legacy: bool = False


@dataclass
class PosthocConfig:
    """Post-process strategy: a softmax model evaluated with adjusters (``iif:smooth``, ``la:1.0``, ``taunorm:1.0``).

    ``checkpoint`` evaluates an existing model instead of training one first.
    """

    checkpoint: str | None = None
    adjusters: list = field(default_factory=lambda: ["iif:smooth"])


@dataclass
class EvalConfig:
    """Model selection on the validation split and the one final evaluation (docs/training.md).

    Every ``every`` epochs (and after the last) the model is scored on the ``val`` split; ``best.pt`` keeps
    the epoch with the highest ``metric`` there, ``last.pt`` the latest. After training, the checkpoint
    ``select`` names (``best`` or ``last``) is evaluated once on ``split`` (normally ``test``). The metric
    is read from the logits the loss predicts with: ``adjusted`` when the loss has its own decision rule
    (the IIF loss: ``w * z``, paper Eq. 13), ``raw`` otherwise. Without a val split (``data.val_per_class=0``)
    there is nothing to select on: the last epoch is used and the log says so.
    """

    # The split of the final report, evaluated once with the selected checkpoint.
    split: str = "test"
    # ``best`` (highest val ``metric``) or ``last`` (the final epoch).
    select: str = "best"
    # ``class_avg`` (mean per-class accuracy, i.e. balanced accuracy) or ``top1``; equal on a balanced val set.
    metric: str = "class_avg"
    batch_size: int = 256
    # Validate every N epochs (0: only after the last epoch).
    every: int = 1
    # Shot-group thresholds; None follows iif.metrics.shot_thresholds (100/20, or 50/15 when no class > 100).
    many: int | None = None
    few: int | None = None
    bins: int = 10


@dataclass
class RuntimeConfig:
    """Where and how to run; none of these (except ``seed``, ``amp`` and ``deterministic``) change the result."""

    seed: int = 0
    # ``auto`` picks cuda when available.
    device: str = "auto"
    # ``none``, ``bf16`` (autocast, no scaler) or ``fp16`` (autocast + GradScaler, cuda only).
    amp: str = "none"
    channels_last: bool = True
    out_dir: str | None = None
    progress: bool = True
    tensorboard: bool = True
    log_every: int = 20
    # Stop (as if killed) after this many completed epochs; used to test resume. Not part of the hash.
    stop_after_epoch: int | None = None
    deterministic: bool = False
    # CPU threads for training (iif train --threads); null: 1 on the CPU below 10,000 training images, else
    # torch's default. More than the usable CPUs is clamped with a warning (iif.resources). Not part of the hash.
    threads: int | None = None


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    decoupled: DecoupledConfig = field(default_factory=DecoupledConfig)
    posthoc: PosthocConfig = field(default_factory=PosthocConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
