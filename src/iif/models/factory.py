"""``build_model``: a backbone producing pooled features plus a classifier head, and model helpers.

Every model is an :class:`ImageClassifier` with ``features(x) -> (N, D)``, ``classifier`` (the head),
``feature_dim`` and ``forward(x) = classifier(features(x))`` (docs/ARCHITECTURE.md, "Models").
Helpers for the decoupled strategies: :func:`freeze_backbone` (frozen weights and BatchNorm statistics),
:func:`replace_head`, and :func:`load_state` which names every key and shape a checkpoint disagrees on.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import IIFError
from .cifar_resnet import CifarResNet
from .heads import HEADS, build_head
from .small_cnn import SmallCNN

__all__ = [
    "ARCHS",
    "ImageClassifier",
    "build_backbone",
    "build_model",
    "replace_head",
    "freeze_backbone",
    "unfreeze_backbone",
    "set_backbone_eval",
    "load_state",
]

ARCHS: tuple[str, ...] = (
    "resnet32",
    "se_resnet32",
    "se_resnet50",
    "se_resnext50_32x4d",
    "se_resnet152",
    "small_cnn",
    "timm:<name>",
    "torchvision:<name>",
)
_PLAIN_ARCHS = tuple(a for a in ARCHS if ":" not in a)


class ImageClassifier(nn.Module):
    """``backbone`` (images -> (N, D)) followed by ``classifier`` (features -> logits).

    After :func:`freeze_backbone` the backbone stays in eval mode whatever ``train()`` is called with, so
    BatchNorm running statistics and dropout of the representation are fixed while the head retrains.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, feature_dim: int, arch: str = "custom") -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.feature_dim = int(feature_dim)
        self.arch = arch
        self.backbone_frozen = False

    @property
    def num_classes(self) -> int:
        return int(self.classifier.weight.shape[0])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        # torchvision Inception/GoogLeNet return a named tuple in training mode; take the main output.
        if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
            out = out.logits
        return out.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


# ----------------------------------------------------------------------------------------------- backbones


def _unknown_arch(arch: str) -> IIFError:
    close = difflib.get_close_matches(str(arch), _PLAIN_ARCHS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return IIFError(f"Unknown arch {arch!r}; choose one of {list(ARCHS)}.{hint}")


def _no_pretrained(arch: str) -> IIFError:
    return IIFError(
        f"No pretrained weights ship for {arch!r}; train from scratch (pretrained=False), load a checkpoint "
        f"with iif.models.load_state, or use a timm/torchvision backbone such as 'timm:seresnet50' with pretrained=True."
    )


def _timm_backbone(name: str, in_channels: int, pretrained: bool, **kwargs: Any) -> tuple[nn.Module, int]:
    try:
        import timm
    except ImportError:
        raise IIFError("arch 'timm:<name>' needs the timm package; install it with `pip install iif[timm]`.") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise IIFError(f"timm has no model {name!r}; closest names: {close}. See timm.list_models() for all of them.")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels, **kwargs)
    return model, int(model.num_features)


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def _strip_torchvision_classifier(model: nn.Module, name: str) -> int:
    """Replace the last Linear of the model's classifier by Identity; return its in_features."""
    for attr in ("fc", "classifier", "heads", "head"):
        sub = getattr(model, attr, None)
        if not isinstance(sub, nn.Module):
            continue
        linears = [(n, m) for n, m in sub.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            continue
        path, linear = linears[-1]
        _set_submodule(model, f"{attr}.{path}" if path else attr, nn.Identity())
        return int(linear.in_features)
    raise IIFError(
        f"Cannot find a Linear classifier (fc / classifier / heads / head) in torchvision model {name!r}; "
        f"use a timm backbone ('timm:<name>') for it instead."
    )


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the first Conv2d accept ``in_channels``; pretrained filters are averaged over RGB."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels == in_channels:
                return
            new = nn.Conv2d(
                in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            )
            with torch.no_grad():
                new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
            _set_submodule(model, path, new)
            return
    raise IIFError("Cannot change in_channels: the torchvision model has no Conv2d input layer; use in_channels=3.")


def _torchvision_backbone(name: str, in_channels: int, pretrained: bool, **kwargs: Any) -> tuple[nn.Module, int]:
    try:
        import torchvision
    except ImportError:
        raise IIFError("arch 'torchvision:<name>' needs torchvision; install it with `pip install iif[train]`.") from None
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise IIFError(f"torchvision has no classification model {name!r}; closest names: {close}.")
    model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    feature_dim = _strip_torchvision_classifier(model, name)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model, feature_dim


def build_backbone(
    arch: str, in_channels: int = 3, pretrained: bool = False, **kwargs: Any
) -> tuple[nn.Module, int]:
    """Build the feature extractor of ``arch``; returns ``(backbone, feature_dim)``.

    ``kwargs`` go to the backbone: ``small_cnn``: ``width``; ``resnet32``/``se_resnet32``: ``widths``,
    ``se_reduction``, ``style`` (``"official"``, the authors' bias-free SE and init, or ``"torchvision"``;
    see :mod:`iif.models.cifar_resnet`); SE-ResNets: ``reduction``, ``zero_init_residual``, ``style``;
    ``timm:``/``torchvision:``: the library's own constructor options. ``pretrained=True`` only exists for timm/torchvision backbones and
    downloads weights through those libraries.
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise IIFError(f"in_channels must be a positive integer (1 for grey, 3 for RGB), got {in_channels!r}.")
    arch = str(arch)
    prefix, sep, name = arch.partition(":")
    if sep:
        if not name:
            raise IIFError(f"arch {arch!r} names no model; write e.g. 'timm:resnet18' or 'torchvision:resnet18'.")
        if prefix == "timm":
            return _timm_backbone(name, in_channels, pretrained, **kwargs)
        if prefix == "torchvision":
            return _torchvision_backbone(name, in_channels, pretrained, **kwargs)
        raise _unknown_arch(arch)
    if arch not in _PLAIN_ARCHS:
        raise _unknown_arch(arch)
    if pretrained:
        raise _no_pretrained(arch)
    try:
        if arch in ("resnet32", "se_resnet32"):
            kwargs.setdefault("se_reduction", 4 if arch == "se_resnet32" else None)
            net: nn.Module = CifarResNet(depth=32, in_channels=in_channels, **kwargs)
            return net, net.feature_dim
        if arch == "small_cnn":
            net = SmallCNN(in_channels=in_channels, **kwargs)
            return net, net.feature_dim
        from .se_resnet import se_resnet_backbone

        return se_resnet_backbone(arch, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        raise IIFError(f"Bad backbone option for arch {arch!r}: {exc}. See iif.models.build_backbone's docstring.") from None


# ----------------------------------------------------------------------------------------------- models


def build_model(
    arch: str,
    num_classes: int,
    head: str = "linear",
    in_channels: int = 3,
    *,
    pretrained: bool = False,
    backbone_kwargs: Mapping[str, Any] | None = None,
    **head_kwargs: Any,
) -> ImageClassifier:
    """Build ``arch`` with a ``head`` classifier over ``num_classes`` classes.

    Archs: ``resnet32``, ``se_resnet32`` (CIFAR, SE r = 4), ``se_resnet50``, ``se_resnext50_32x4d``,
    ``se_resnet152`` (r = 16), ``small_cnn``, ``timm:<name>``, ``torchvision:<name>``.
    Heads: ``linear``, ``cosine`` (``scale``, ``learnable_scale``), ``normed_linear`` (``scale``),
    ``tau_norm`` (``tau``), ``lws``; ``head_kwargs`` go to the head (see :func:`iif.models.build_head`).
    ``backbone_kwargs`` go to :func:`build_backbone` (e.g. ``{"width": 16}`` for ``small_cnn``).
    """
    if str(head).lower() not in HEADS:
        raise IIFError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise IIFError(f"num_classes must be a positive integer, got {num_classes!r}.")
    backbone, feature_dim = build_backbone(arch, in_channels, pretrained, **dict(backbone_kwargs or {}))
    classifier = build_head(head, feature_dim, num_classes, **head_kwargs)
    model = ImageClassifier(backbone, classifier, feature_dim, arch=str(arch))
    model.head_name = str(head).lower()
    return model


def replace_head(model: nn.Module, head: str, **head_kwargs: Any) -> nn.Module:
    """Swap ``model.classifier`` for a fresh ``head`` of the same feature and class sizes (cRT-style)."""
    old = model.classifier
    new = build_head(head, int(old.weight.shape[1]), int(old.weight.shape[0]), **head_kwargs)
    model.classifier = new.to(device=old.weight.device, dtype=old.weight.dtype)
    if isinstance(model, ImageClassifier):
        model.head_name = str(head).lower()
    return model


# ----------------------------------------------------------------------------------------------- freezing


def set_backbone_eval(model: nn.Module) -> nn.Module:
    """Put every part of ``model`` except ``model.classifier`` in eval mode (frozen BN statistics)."""
    for name, child in model.named_children():
        if name != "classifier":
            child.eval()
    return model


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze everything but ``model.classifier``: no gradients, and BatchNorm statistics fixed.

    On an :class:`ImageClassifier` the backbone then stays in eval mode across ``model.train()``; on
    another module call :func:`set_backbone_eval` after each ``model.train()``.
    """
    if not isinstance(getattr(model, "classifier", None), nn.Module):
        raise IIFError("freeze_backbone needs a model with a `classifier` head; build it with iif.models.build_model.")
    for name, param in model.named_parameters():
        if not name.startswith("classifier."):
            param.requires_grad_(False)
    if isinstance(model, ImageClassifier):
        model.backbone_frozen = True
    return set_backbone_eval(model)


def unfreeze_backbone(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze_backbone`: every parameter trainable, train/eval mode follows the model again."""
    for param in model.parameters():
        param.requires_grad_(True)
    if isinstance(model, ImageClassifier):
        model.backbone_frozen = False
    return model.train(model.training)


# ----------------------------------------------------------------------------------------------- loading


def _unwrap_state(state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise IIFError(f"load_state needs a state dict (a mapping of names to tensors), got {type(state).__name__}.")
    # Accept a whole checkpoint holding the weights under a conventional key.
    for key in ("model", "state_dict", "model_state"):
        inner = state.get(key)
        if isinstance(inner, Mapping):
            state = inner
            break
    state = dict(state)
    # Strip wrappers added by DistributedDataParallel ("module.") or torch.compile ("_orig_mod.").
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _listing(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_state(model: nn.Module, checkpoint_state: Mapping[str, Any], strict: bool = True) -> nn.Module:
    """Load ``checkpoint_state`` into ``model``, raising :class:`IIFError` that names what differs.

    A shape disagreement (other arch, head or number of classes) always raises; missing or unexpected
    keys raise when ``strict`` (otherwise only the common keys are loaded). Accepts a plain state dict,
    a checkpoint dict holding it under ``model``/``state_dict``, and DDP/compile key prefixes.
    """
    state = _unwrap_state(checkpoint_state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    problems = []
    if "classifier.weight" in own and isinstance(state.get("classifier.weight"), torch.Tensor):
        ckpt_c, model_c = state["classifier.weight"].shape[0], own["classifier.weight"].shape[0]
        if ckpt_c != model_c:
            problems.append(f"number of classes differs (checkpoint {ckpt_c}, model {model_c})")
    if mismatched:
        problems.append(f"shapes differ for {_listing(mismatched)}")
    if strict and missing:
        problems.append(f"missing in checkpoint: {_listing(missing)}")
    if strict and unexpected:
        problems.append(f"not in model: {_listing(unexpected)}")
    if problems:
        arch = getattr(model, "arch", type(model).__name__)
        raise IIFError(
            f"Checkpoint does not match the model (arch {arch!r}): " + "; ".join(problems)
            + ". Build the model with the checkpoint's arch, head and num_classes"
            + (", or pass strict=False to load only the matching keys." if not mismatched else ".")
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    return model
