"""One definition per method (issue 16, part 2): every method ``iif`` knows, defined once, driving every task.

A :class:`Method` is the whole definition of one method: its canonical name (the detection spelling), the
aliases it is also known by, the paper it comes from, the tasks that have it, the spelling each task's own
table uses, for a detection margin the phases (``when``) it accepts, and its behaviour:

* ``train``: the training-time logit transform, the logits inside the cross-entropy (Balanced Softmax
  ``z + ln n``, Ren et al. 2020; logit adjustment ``z + tau ln p``, Menon et al. 2021, Eq. 10; IIF ``w * z``,
  Alexandridis et al. 2023, Eq. 15);
* ``infer``: the inference transform, applied post hoc (IIF ``w * z``, Eq. 13; logit adjustment
  ``z - tau ln p``, Menon et al. Eq. 9; NorCal ``z - gamma ln n``);
* ``params``: the transforms' parameters (:class:`Param`: name, default, check);
* ``impl``: per task, a special implementation that replaces the generic one built from the transforms
  (the fused :class:`iif.IIFLoss`, LDAM, CB, focal, Seesaw, tau-norm, detection's Bayes logit-adjustment
  offsets and background prior).

A transform is a function ``fn(logits, counts, **params) -> logits``: ``logits`` ``(..., C)`` (float32, or
float64 for float64 logits), ``counts`` the ``C`` per-class training counts as a float64 tensor on the logits'
device; it returns logits of the same shape (rounded once to the input's dtype). In detection it sees the
``C`` foreground columns only: the background logit is untouched unless the method's detection ``impl``
says otherwise. The built-in methods name their transforms and implementations as ``"module:attribute"``
strings resolved on first use (:func:`iif.logit_transforms.resolve`), so this module imports only
:mod:`iif.errors` and ``import iif`` stays torch-free; a user's method passes functions.

Dispatch (the one rule every task follows): a task uses the method's ``impl`` for that task when there is
one, else the generic implementation built from the transforms: :func:`iif.losses.build_loss` a
:class:`iif.losses.TransformLoss` (``CE(train(z), y)``), ``--adjust NAME[:value]`` /
:func:`iif.train.build_adjuster` and :func:`iif.detection.use_margin` an
:class:`iif.logit_transforms.TransformAdjuster` (``train`` in the training loss, ``infer`` at inference, as
``when`` picks). So a method defined only through :func:`register_method` works in ``iif train`` (its
``loss.kwargs`` are its parameters), ``--adjust`` / ``posthoc.adjusters`` and ``use_margin(model, NAME,
freq, params={...})``, and ``iif bench --methods NAME`` (``run_bench(methods=...)``) adds its post-hoc and
end-to-end rows.

Tasks (:data:`TASKS`): ``"loss"`` a classification training loss (needs ``train`` or a loss ``impl``);
``"posthoc"`` a classification post-hoc adjuster (needs ``infer`` or an ``impl``); ``"detection"`` a
detection margin (needs a transform or an ``impl``).

Detection phases (:data:`WHEN`, stated only here): IIF multiplies the logits (paper Eq. 13-15) and keeps its
meaning in either phase, so it takes all three; Balanced Softmax (``z + ln n`` in the loss) and Seesaw are
training losses (``train``); logit adjustment adds ``tau ln p`` in the loss *or* subtracts it at inference
(``train`` or ``test``: the same offset in both phases cancels through the classifier bias); NorCal is an
inference-time recalibration (``test``). A classification loss of a method that takes ``train_and_test``
predicts with its ``infer`` transform (``adjust_logits``, as the IIF loss predicts with ``w * z``); the others
predict with ``z``.

Adding a method: one :class:`Method` entry in :data:`METHODS` (a built-in) or one
:func:`register_method` call (a user's), plus its tests; docs/ARCHITECTURE.md "Adding a method".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .errors import IIFError

__all__ = ["TASKS", "WHEN", "PHASES", "Param", "Method", "METHODS", "canonical_method", "method_names", "spelling",
           "get_method", "all_methods", "register_method", "unregister_method", "check_params", "parse_params"]

#: The tasks a method can belong to (see the module docstring).
TASKS: tuple[str, ...] = ("loss", "posthoc", "detection")
_TASK_LABELS = {"loss": "classification losses", "posthoc": "classification post-hoc adjusters",
                "detection": "detection margins"}

#: The phases of a detection margin: in the training loss and at inference, only in the loss, only at inference.
WHEN: tuple[str, ...] = ("train_and_test", "train", "test")

#: The two logit transforms of a definition: in the training loss, at inference.
PHASES: tuple[str, ...] = ("train", "infer")

#: A transform or an implementation: a function, or ``"module:attribute"`` resolved on use.
Ref = Union[str, Callable[..., Any], None]

_CHECKS = ("number", "nonnegative", "positive", "text")


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


@dataclass(frozen=True)
class Param:
    """One parameter of a method's transforms.

    Attributes:
        name: the keyword the transforms take (e.g. ``"tau"``).
        default: its value when not given.
        check: ``"number"`` (finite), ``"nonnegative"`` (finite, >= 0), ``"positive"`` (finite, > 0), ``"text"``
            (a non-empty string), or a function ``value -> value`` that raises ``ValueError`` / ``IIFError``.
        help: one phrase for error messages (e.g. ``"the temperature"``).
    """

    name: str
    default: Any
    check: Any = "number"
    help: str = ""

    def coerce(self, value: Any, method: str) -> Any:
        """``value`` checked (and converted: numbers to float), or one :class:`IIFError` line naming the fix."""
        what = f"method {method!r}: parameter {self.name!r}" + (f" ({self.help})" if self.help else "")
        if callable(self.check):
            try:
                return self.check(value)
            except (ValueError, TypeError) as exc:
                raise IIFError(f"{what} is {value!r}: {exc}".rstrip(".") + ".") from None
        if self.check == "text":
            if isinstance(value, str) and value.strip():
                return value.strip()
            raise IIFError(f"{what} must be a non-empty string; got {value!r} (default {self.default!r}).")
        try:
            v = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            v = float("nan")
        ok = _finite(v) and (self.check == "number" or v > 0 or (self.check == "nonnegative" and v == 0))
        if not ok:
            need = {"number": "a finite number", "nonnegative": "a finite number >= 0",
                    "positive": "a finite number > 0"}[self.check]
            raise IIFError(f"{what} must be {need}; got {value!r}. Write e.g. {self.name}={self.default!r}.")
        return v


@dataclass(frozen=True)
class Method:
    """One method: its vocabulary and its behaviour (see the module docstring).

    Attributes:
        name: canonical name (the detection spelling, e.g. ``"logit_adjustment"``).
        aliases: other accepted spellings in every task (e.g. ``"la"``, ``"logit_adjusted"``).
        reference: the paper (and equation) it comes from.
        tasks: the :data:`TASKS` that have it.
        spellings: ``(task, spelling)`` pairs where a task's own table uses another key than ``name`` (the
            loss registry's ``"ce"``, the adjuster kind ``"la"``); that spelling is accepted in that task only
            unless it is also an alias.
        when: the detection phases it accepts (empty unless ``"detection"`` is in ``tasks``).
        train: the training-time logit transform (``fn(logits, counts, **params)``, or ``"module:function"``).
        infer: the inference transform (same form).
        params: the transforms' parameters.
        impl: ``(task, "module:attribute")`` pairs: the special implementation of that task (a loss builder
            ``(freq, **options) -> LossBase``; a post-hoc kind of :mod:`iif.train.strategies`; a detection
            adjuster builder of :mod:`iif.detection.margins_adjusters`).
    """

    name: str
    aliases: tuple[str, ...]
    reference: str
    tasks: tuple[str, ...]
    spellings: tuple[tuple[str, str], ...] = ()
    when: tuple[str, ...] = ()
    train: Ref = None
    infer: Ref = None
    params: tuple[Param, ...] = ()
    impl: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def spelling(self, task: str) -> str:
        """The key ``task``'s own table uses for this method (``name`` unless :attr:`spellings` says otherwise)."""
        return dict(self.spellings).get(task, self.name)

    def accepts(self, task: str) -> tuple[str, ...]:
        """Every spelling that resolves to this method in ``task``: name, aliases, the task's own key."""
        own = self.spelling(task)
        return (self.name, *self.aliases, *(() if own == self.name else (own,)))

    def implementation(self, task: str) -> Optional[str]:
        """The ``"module:attribute"`` of this method's special implementation in ``task``, or None (generic)."""
        return dict(self.impl).get(task)

    def transform(self, phase: str) -> Ref:
        """The ``"train"`` or ``"infer"`` transform (a function or a reference), or None."""
        if phase not in PHASES:
            raise IIFError(f"Unknown phase {phase!r} of a method transform; use one of {', '.join(PHASES)}.")
        return self.train if phase == "train" else self.infer

    def defaults(self) -> dict[str, Any]:
        """The parameters' defaults, by name."""
        return {p.name: p.default for p in self.params}


_CB = "Cui et al., 'Class-Balanced Loss Based on Effective Number of Samples', CVPR 2019"
_L, _P, _D = "loss", "posthoc", "detection"
_T = "iif.logit_transforms:"  # the built-in transforms (functional forms of iif.adjusters)
_DET = (_D, "iif.detection.margins_adjusters:_build_adjuster")  # detection's special adjusters
_TAU = Param("tau", 1.0, "number", "logit adjustment's temperature, 1.0 Bayes-optimal")


def _loss(key: str) -> tuple[str, str]:
    return (_L, f"iif.losses.registry:_build_{key}")


def _kind(key: str) -> tuple[str, str]:
    return (_P, f"iif.train.strategies:{key}")


#: The built-in definitions, in the order each task lists its methods.
METHODS: tuple[Method, ...] = (
    Method("softmax", ("ce",), "plain softmax cross-entropy, no adjustment (the baseline)",
           (_L, _P, _D), spellings=((_L, "ce"), (_P, "none")), when=WHEN, train=_T + "identity",
           infer=_T + "identity", impl=(_loss("ce"), _kind("NONE_KIND"), _DET)),
    Method("iif", (), "Alexandridis et al., 'Inverse Image Frequency for Long-tailed Image Recognition', "
           "IEEE TIP 2023, Eq. 13-15 (w * z in the loss and/or at inference)", (_L, _P, _D), when=WHEN,
           train=_T + "iif_scale", infer=_T + "iif_scale",
           params=(Param("variant", "smooth", "text", "the IIF weight variant of Table III"),
                   Param("gamma", 1.0, "positive", "the power of the IIF weights")),
           impl=(_loss("iif"), _kind("IIF_KIND"), _DET)),
    Method("iif_csl", (), "Alexandridis et al., IEEE TIP 2023: IIF weights as per-class costs of the "
           "cross-entropy (cost-sensitive baseline)", (_L,), impl=(_loss("iif_csl"),)),
    Method("balanced_softmax", (), "Ren et al., 'Balanced Meta-Softmax for Long-Tailed Visual Recognition', "
           "NeurIPS 2020 (z + ln n in the loss)", (_L, _D), when=("train",), train=_T + "add_log_counts",
           impl=(_loss("balanced_softmax"), _DET)),
    Method("logit_adjustment", ("la", "logit_adjusted"), "Menon et al., 'Long-tail learning via logit "
           "adjustment', ICLR 2021 (z + tau ln p in the loss, or z - tau ln p at inference)", (_L, _P, _D),
           spellings=((_L, "logit_adjusted"), (_P, "la")), when=("train", "test"), train=_T + "add_log_prior",
           infer=_T + "subtract_log_prior", params=(_TAU,),
           impl=(_loss("logit_adjusted"), _kind("LA_KIND"), _DET)),
    Method("ldam", (), "Cao et al., 'Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss', "
           "NeurIPS 2019 (LDAM-DRW)", (_L,), impl=(_loss("ldam"),)),
    Method("cb_softmax", (), _CB + " (softmax cross-entropy)", (_L,), impl=(_loss("cb_softmax"),)),
    Method("cb_sigmoid", (), _CB + " (sigmoid cross-entropy)", (_L,), impl=(_loss("cb_sigmoid"),)),
    Method("cb_focal", (), _CB + " (sigmoid focal loss)", (_L,), impl=(_loss("cb_focal"),)),
    Method("cb_softmax_focal", (), _CB + " (softmax focal loss)", (_L,), impl=(_loss("cb_softmax_focal"),)),
    Method("focal", (), "Lin et al., 'Focal Loss for Dense Object Detection', ICCV 2017 (softmax form)", (_L,),
           impl=(_loss("focal"),)),
    Method("norcal", (), "Pan et al., 'On Model Calibration for Long-Tailed Object Detection and Instance "
           "Segmentation', NeurIPS 2021 (inference-time recalibration)", (_D,), when=("test",),
           infer=_T + "subtract_log_counts",
           params=(Param("gamma", 1.0, "nonnegative", "NorCal's exponent on the class counts"),), impl=(_DET,)),
    Method("seesaw", (), "Wang et al., 'Seesaw Loss for Long-Tailed Instance Segmentation', CVPR 2021",
           (_L, _D), when=("train",), impl=(_loss("seesaw"), _DET)),
    Method("eqlv2", (), "Tan et al., 'Equalization Loss v2: A New Gradient Balance Approach for Long-tailed Object "
           "Detection', CVPR 2021 (sigmoid classifier, gradient-guided reweighting, Eq. 7-8)", (_D,), when=("train",),
           params=(Param("gamma", 12.0, "nonnegative", "the slope of the mapping function f"),
                   Param("mu", 0.8, "nonnegative", "the centre of the mapping function f"),
                   Param("alpha", 4.0, "nonnegative", "the positive weight's gain")),
           impl=((_D, "iif.detection.eqlv2:_build_eqlv2"),)),
    Method("taunorm", (), "Kang et al., 'Decoupling Representation and Classifier for Long-Tailed "
           "Recognition', ICLR 2020 (classifier rows w / ||w||^tau)", (_P,), impl=(_kind("TAUNORM_KIND"),)),
)

# The methods added by register_method, in the order they were added (after the built-ins everywhere).
_USER: dict[str, Method] = {}


def all_methods() -> tuple[Method, ...]:
    """The built-in :data:`METHODS` followed by the methods added with :func:`register_method`."""
    return METHODS + tuple(_USER.values())


def _by_name() -> dict[str, Method]:
    return {m.name: m for m in all_methods()}


def _check_task(task: Optional[str]) -> None:
    if task is not None and task not in TASKS:
        raise IIFError(f"Unknown task {task!r} for a method; use one of {', '.join(TASKS)}.")


def method_names(task: Optional[str] = None) -> tuple[str, ...]:
    """Canonical names of the methods ``task`` has (every method when ``task`` is None), in table order."""
    _check_task(task)
    return tuple(m.name for m in all_methods() if task is None or task in m.tasks)


def get_method(name: str, task: Optional[str] = None) -> Method:
    """The :class:`Method` that ``name`` (any accepted spelling) resolves to; see :func:`canonical_method`."""
    return _by_name()[canonical_method(name, task)]


def spelling(name: str, task: str) -> str:
    """The key ``task``'s own table uses for ``name`` (any accepted spelling): ``spelling("la", "loss")`` is
    ``"logit_adjusted"``, ``spelling("logit_adjustment", "posthoc")`` is ``"la"``."""
    return get_method(name, task).spelling(task)


def _accepted(task: Optional[str]) -> dict[str, str]:
    """spelling -> canonical name, for the methods of ``task`` (every task when None)."""
    out: dict[str, str] = {}
    for m in all_methods():
        if task is None or task in m.tasks:
            for t in ((task,) if task is not None else m.tasks):
                for s in m.accepts(t):
                    out.setdefault(s, m.name)
    return out


def canonical_method(name: Any, task: Optional[str] = None, *, what: str = "method") -> str:
    """The canonical name of method ``name`` (its name, an alias, or ``task``'s own spelling), exact match.

    With ``task`` (one of :data:`TASKS`) the method must belong to that task. Raises :class:`IIFError` with a
    one-line message that lists the valid canonical names and aliases (and the closest spelling) when
    ``name`` is unknown or not available for ``task``; ``what`` names the thing in the message
    (``"loss"``, ``"method"``, ...)."""
    _check_task(task)
    accepted = _accepted(task)
    if isinstance(name, str) and name in accepted:
        return accepted[name]
    elsewhere = _accepted(None).get(name) if isinstance(name, str) else None
    where = f" for {_TASK_LABELS[task]}" if task is not None else ""
    if elsewhere is not None and task is not None and task in _by_name()[elsewhere].tasks:  # another task's spelling
        tasks = ", ".join(_TASK_LABELS[t] for t in TASKS if name in _accepted(t))
        where += f" ({name!r} names {elsewhere!r} only in {tasks}; write {elsewhere!r})"
    elif elsewhere is not None:  # known, but not in this task
        tasks = ", ".join(_TASK_LABELS[t] for t in _by_name()[elsewhere].tasks)
        where += f" ({elsewhere!r} is one of the {tasks})"
    names = method_names(task)
    aliases = [f"{s}={canon}" for s, canon in accepted.items() if s != canon]
    close = difflib.get_close_matches(str(name), list(accepted), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names) + (f" (aliases: {', '.join(aliases)})" if aliases else "")
    raise IIFError(f"Unknown {what} {name!r}{where}; use one of {listed}.{hint}")


# ---------------------------------------------------------------------------------------------- parameters


def check_params(method: Method, given: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Every parameter of ``method``: ``given`` ones checked (:meth:`Param.coerce`), the rest their defaults.
    An unknown name is one :class:`IIFError` line listing the method's parameters."""
    given = dict(given or {})
    known = {p.name: p for p in method.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        have = ", ".join(f"{p.name}={p.default!r}" for p in method.params) or "none"
        raise IIFError(f"method {method.name!r} has no parameter {unknown[0]!r}; its parameters are {have}.")
    return {n: (p.coerce(given[n], method.name) if n in given else p.default) for n, p in known.items()}


def parse_params(method: Method, arg: str, spec: Optional[str] = None) -> dict[str, Any]:
    """The parameters of an adjuster spec's argument: ``""`` (the defaults), ``"0.5"`` (the first parameter)
    or ``"tau=0.5,gamma=2"`` (by name), checked by :func:`check_params`."""
    arg = str(arg).strip()
    given: dict[str, Any] = {}
    if arg and "=" not in arg:
        if not method.params:
            raise IIFError(f"adjuster {spec or method.name!r}: method {method.name!r} takes no parameter; "
                           f"write {method.name} alone.")
        given[method.params[0].name] = arg
    elif arg:
        for part in arg.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise IIFError(f"adjuster {spec or method.name!r}: write {method.name}:<value> or "
                               f"{method.name}:<name>=<value>,<name>=<value>; got {arg!r}.")
            given[key.strip()] = value.strip()
    return check_params(method, given)


# ---------------------------------------------------------------------------------------------- registering


def _check_ref(ref: Ref, what: str) -> Ref:
    if ref is None or callable(ref) or (isinstance(ref, str) and ref.count(":") == 1 and all(ref.split(":"))):
        return ref
    raise IIFError(f"{what} must be a function fn(logits, counts, **params) -> logits or a 'module:function' "
                   f"string; got {ref!r}.")


def _as_params(params: Union[Mapping[str, Any], Sequence[Param]]) -> tuple[Param, ...]:
    if isinstance(params, Mapping):
        return tuple(Param(str(k), v, "text" if isinstance(v, str) else "number") for k, v in params.items())
    out = tuple(params)
    for p in out:
        if not isinstance(p, Param) or not (callable(p.check) or p.check in _CHECKS):
            raise IIFError(f"params must be iif.methods.Param entries (check one of {', '.join(_CHECKS)} or a "
                           f"function) or a dict name -> default; got {p!r}.")
    return out


def _derived(train: Ref, infer: Ref, tasks: Optional[Sequence[str]],
             when: Optional[Sequence[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tasks and ``when`` values a user's method has: given ones checked against its transforms, else all
    its transforms allow (``train_and_test`` only with both transforms)."""
    can = {"loss": train is not None, "posthoc": infer is not None, "detection": True}
    phases = {"train_and_test": train is not None and infer is not None, "train": train is not None,
              "test": infer is not None}
    tasks_t = tuple(t for t in TASKS if can[t]) if tasks is None else tuple(tasks)
    for t in tasks_t:
        _check_task(t)
        if not can[t]:
            need = "a train transform" if t == "loss" else "an infer transform"
            raise IIFError(f"task {t!r} needs {need}; pass it or leave {t!r} out of tasks.")
    when_t = tuple(w for w in WHEN if phases[w]) if when is None else tuple(when)
    for w in when_t:
        if w not in WHEN or not phases[w]:
            raise IIFError(f"when={w!r} needs the transform(s) of that phase (train_and_test: train and infer; "
                           f"train: train; test: infer); use values of {WHEN} that the method's transforms allow.")
    return tasks_t, (when_t if "detection" in tasks_t else ())


def register_method(name: str, *, train: Ref = None, infer: Ref = None,
                    params: Union[Mapping[str, Any], Sequence[Param]] = (), aliases: Sequence[str] = (),
                    reference: str = "user-defined method", tasks: Optional[Sequence[str]] = None,
                    when: Optional[Sequence[str]] = None, replace: bool = False) -> Method:
    """Define a method once; every task then has it (module docstring, "Dispatch"). Returns the :class:`Method`.

    Args:
        name: a new lower-case name (letters, digits, ``_``), not a spelling of another method.
        train: the training-time transform ``fn(logits, counts, **params) -> logits`` (or ``"module:function"``).
        infer: the inference transform (same form). At least one of ``train`` and ``infer``.
        params: the transforms' parameters: :class:`Param` entries, or a dict ``name -> default`` (a string
            default checks ``"text"``, anything else ``"number"``).
        aliases: other spellings.
        reference: the paper (and equation).
        tasks: default every task the transforms allow (``loss`` needs ``train``, ``posthoc`` ``infer``).
        when: the detection phases; default those the transforms allow (``train_and_test`` when both are
            given: pass ``("train", "test")`` for an additive prior correction, which cancels in both phases).
        replace: replace a method registered earlier under ``name`` (built-in methods cannot be replaced).

    Example (a multiplicative margin ``z * (n_max / n) ** 0.5``, Eq. 13's form with other weights)::

        iif.register_method("power", train=lambda z, n, a: z * (n.max() / n) ** a,
                            infer=lambda z, n, a: z * (n.max() / n) ** a, params={"a": 0.5})
    """
    if not (isinstance(name, str) and name[:1].isalpha() and name == name.lower()
            and name.replace("_", "").isalnum() and name.isascii()):
        raise IIFError(f"method name {name!r} must be lower-case letters, digits and '_', starting with a letter.")
    if any(m.name == name for m in METHODS):
        raise IIFError(f"{name!r} is a built-in method and cannot be replaced; register under another name.")
    if name in _USER and not replace:
        raise IIFError(f"method {name!r} is already registered; pass replace=True or unregister_method({name!r}).")
    if train is None and infer is None:
        raise IIFError(f"method {name!r} needs a train transform, an infer transform or both.")
    train, infer = _check_ref(train, "train"), _check_ref(infer, "infer")
    tasks_t, when_t = _derived(train, infer, tasks, when)
    taken = {s: canon for s, canon in _accepted(None).items() if canon != name}
    for s in (name, *aliases):
        if s in taken:
            raise IIFError(f"{s!r} already names method {taken[s]!r}; choose another name or alias.")
    method = Method(name, tuple(aliases), str(reference), tasks_t, when=when_t, train=train, infer=infer,
                    params=_as_params(params))
    _USER[name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method` (built-in methods stay)."""
    if name not in _USER:
        raise IIFError(f"no registered method {name!r}; registered: {', '.join(_USER) or 'none'} "
                       "(built-in methods cannot be removed).")
    del _USER[name]
