"""The run profiles (smoke, quick, paper-smoke, paper): the one place where their settings live.

A profile fixes the data, the network, the training protocol of Sec. 4.1 (with the semantics of
[21], Lee et al. 2020, whose training protocol the paper follows) and the sizes of the analyses.
Any field can be overridden for one run (``leaklib train --set num_steps=12 epochs=1``); the
overridden profile keeps its name and every override enters the run's config hash.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

from .models import ARCHITECTURES, INIT_GAIN, POOLINGS
from .neurons import CORRECTIONS, LEAK_GRADS

__all__ = ["Profile", "PROFILES", "DEFAULT_PROFILE", "ABLATIONS", "THEORY_SIZES", "get_profile", "parse_overrides", "parse_tau", "format_tau",
           "OVERRIDABLE", "lee2020_weight_decay"]


#: Sizes of the coherence chapter (Sec. 2.2, supplement Sec. 7): frequencies per theory curve
#: (n_freq), the simulation of the normalised LIF that decides the erratum (erratum_*, time in units
#: of tau_m), the simulation of the network neurons for Fig. 2 (net_*, in time steps), and the
#: frequencies timed for one curve. "small" runs in seconds, "full" in about a minute.
THEORY_SIZES: dict[str, dict[str, float]] = {
    "small": dict(n_freq=12, erratum_t=100.0, erratum_trials=16, erratum_nperseg=2048, blocks=4,
                  net_t_steps=3000.0, net_trials=8, net_nperseg=4096, timing_freqs=20),
    "full": dict(n_freq=200, erratum_t=400.0, erratum_trials=64, erratum_nperseg=4096, blocks=16,
                 net_t_steps=20000.0, net_trials=32, net_nperseg=8192, timing_freqs=200),
}


@dataclass(frozen=True)
class Profile:
    """Everything a profile fixes: data, network, training protocol (Sec. 4.1) and analysis sizes."""

    name: str
    description: str
    datasets: tuple[str, ...]
    taus: tuple[float, ...]
    seeds: tuple[int, ...]
    num_steps: int                      # T, time steps per image
    epochs: int
    batch_size: int
    lr: float                           # for the Eq. 5 loss averaged over the batch
    momentum: float
    weight_decay: float                 # for the same loss: [21]'s 5e-4 is lee2020_weight_decay(batch_size)
    milestones: tuple[float, ...]       # lr drops, as fractions of the epochs (paper: 70/150, 100/150)
    lr_gamma: float
    dropout: float                      # [21]: 0.2 after every conv and FC layer, one mask per sample for all T
    v_th: float = 1.0
    leak_grad: str = "detached"         # [21]: the decay is a constant in the backward pass (leaklib.neurons)
    correction: str = "lee2020"         # Eq. 5's epsilon: [21]'s per-neuron leak correction, or "none"
    pooling: str = "spiking"            # [21]: average pooling followed by non-leaky spiking neurons (0.75)
    init_gain: float = INIT_GAIN        # weights ~ N(0, init_gain^2 / fan_in): He, as [21]
    sse_window: float = 20 / 150        # Table 1 averages the SSE over the last 20 of 150 epochs
    train_subset: int | None = None     # stratified subset sizes; None = the whole split
    test_subset: int | None = None
    train_eval_subset: int | None = None  # train images on which the eval-mode train SSE is measured each epoch
    eval_batch_size: int = 256
    analysis_images: int | None = None  # test images used by the analyses (None = all)
    theory: str = "full"                # sizes of the coherence chapter's theory curves and simulations (THEORY_SIZES)
    robustness_images: int | None = None  # of those, the stratified subset of the noise calibration and sweep (None = all)
    architectures: dict[str, str] = field(default_factory=lambda: dict(ARCHITECTURES))

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_steps", "epochs", "batch_size", "eval_batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("train_subset", "test_subset", "train_eval_subset", "analysis_images", "robustness_images"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                problems.append(f"{name} must be a positive integer or None, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (self.v_th > 0 and self.init_gain > 0 and self.weight_decay >= 0 and self.lr_gamma > 0):
            problems.append("v_th, init_gain and lr_gamma must be positive and weight_decay >= 0")
        if not 0.0 < self.sse_window <= 1.0:
            problems.append(f"sse_window must be in (0, 1], got {self.sse_window!r}")
        if any(not 0.0 < f < 1.0 for f in self.milestones):
            problems.append(f"milestones are fractions of the epochs in (0, 1), got {self.milestones!r}")
        for name, allowed in (("leak_grad", LEAK_GRADS), ("correction", CORRECTIONS), ("pooling", POOLINGS),
                              ("theory", tuple(THEORY_SIZES))):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not self.taus or not self.seeds or not self.datasets:
            problems.append("datasets, taus and seeds must not be empty")
        if any(not (t > 0) for t in self.taus):
            problems.append(f"every tau_m must be > 0 or inf, got {self.taus!r}")
        if any(not (isinstance(s, int) and s >= 0) for s in self.seeds):
            problems.append(f"seeds must be integers >= 0, got {self.seeds!r}")
        missing = [d for d in self.datasets if d not in self.architectures]
        if missing:
            problems.append(f"no network for dataset(s) {', '.join(missing)}")
        if problems:
            raise ValueError(f"profile {self.name!r}: " + "; ".join(problems))

    def milestone_epochs(self) -> list[int]:
        """Epochs at which the learning rate drops (scaled from the paper's 70 and 100 of 150)."""
        # MultiStepLR lowers the rate after epoch m: a milestone at or past the last epoch never acts
        return sorted({m for m in (max(1, round(f * self.epochs)) for f in self.milestones) if m < self.epochs})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taus"] = [format_tau(t) for t in self.taus]
        return d


# Learning rates and weight decay. [21] trains with plain SGD, lr 0.0033 and weight decay 5e-4, on a
# loss summed over the batch and the classes, without the 1/2 of Eq. 5: it minimises
# sum_batch SSE + (5e-4 / 2) |w|^2. Our loss is Eq. 5 averaged over the batch, 1/(2 * batch) of
# [21]'s, so [21]'s step at the same batch is lr = 0.0033 * 2 * batch (0.42 at the paper's batch of
# 64) with weight decay 5e-4 / (2 * batch) (3.9e-6 at 64): the same objective, scaled. Every profile
# keeps [21]'s weight decay relative to the loss, whatever its learning rate.
_LEE_LR_PER_IMAGE = 0.0033 * 2
_LEE_WEIGHT_DECAY = 5e-4


def lee2020_weight_decay(batch_size: int) -> float:
    """[21]'s weight decay 5e-4 on its batch-summed loss, for Eq. 5's loss averaged over ``batch_size``: 5e-4 / (2 B)."""
    return _LEE_WEIGHT_DECAY / (2 * batch_size)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="seconds: tests and CI; a digits subset, tiny T, 2 epochs, 1 seed",
        datasets=("digits",), taus=(30.0, 100.0, math.inf), seeds=(1,),
        num_steps=8, epochs=2, batch_size=32, lr=0.2, momentum=0.0, weight_decay=lee2020_weight_decay(32),
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.0,
        train_subset=160, test_subset=60, train_eval_subset=60, eval_batch_size=64, analysis_images=40,
        theory="small", architectures={**ARCHITECTURES, "digits": "8x8x1-8C3-2P-16C3-2P-32FC-10o"},
    ),
    "quick": Profile(
        name="quick",
        description="default: scikit-learn digits at the paper's T=100 on a 2-core CPU, whole book in minutes",
        datasets=("digits",), taus=(10.0, 20.0, 30.0, 100.0, math.inf), seeds=(1, 2, 3, 4, 5),
        num_steps=100, epochs=10, batch_size=32, lr=1.0, momentum=0.0, weight_decay=lee2020_weight_decay(32),
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.2,
        train_eval_subset=180, eval_batch_size=360, analysis_images=None,
        # 10 test images per digit for the noise sweep: 33 conditions x 100 images at ~1.7 ms per T=100
        # forward pass (measured, one core) is ~6 core-s per network, plus ~6 per IF network to calibrate
        robustness_images=100,
    ),
    "paper-smoke": Profile(
        name="paper-smoke",
        description="the paper's datasets, networks and training semantics shrunk to a CPU dry run of minutes",
        datasets=("cifar10", "svhn"), taus=(30.0, 100.0, math.inf), seeds=(1,),
        # T = 40: the last of the eight hidden layers of the CIFAR-10 net first fires after 25-40 steps
        num_steps=40, epochs=1, batch_size=8, lr=_LEE_LR_PER_IMAGE * 8, momentum=0.0,
        weight_decay=lee2020_weight_decay(8),
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.2,
        train_subset=8, test_subset=4, train_eval_subset=4, eval_batch_size=4, analysis_images=4, theory="small",
    ),
    "paper": Profile(
        name="paper",
        description="the paper's protocol (Sec. 4.1): CIFAR-10 and SVHN, T=100, 150 epochs, batch 64, 3 seeds; GPU",
        datasets=("cifar10", "svhn"), taus=(30.0, 100.0, math.inf), seeds=(1, 2, 3),
        num_steps=100, epochs=150, batch_size=64, lr=_LEE_LR_PER_IMAGE * 64, momentum=0.0,
        weight_decay=lee2020_weight_decay(64),
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.2,
        train_eval_subset=10_000, eval_batch_size=256, analysis_images=None,
    ),
}

DEFAULT_PROFILE = "quick"

#: The ablation the book runs beside a profile: the exact gradient of the forward computation (the
#: leak not detached, eps = 0), instead of [21]'s detached leak with its correction.
ABLATIONS: dict[str, dict[str, str]] = {"exact-gradient": {"leak_grad": "exact", "correction": "none"}}

#: Fields ``--set`` may change (all but the name and description).
OVERRIDABLE: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Profile) if f.name not in ("name", "description"))


def get_profile(name: str, **overrides: Any) -> Profile:
    """The named profile, optionally with fields replaced (e.g. ``epochs=3``); bad values raise ValueError."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    unknown = [k for k in overrides if k not in OVERRIDABLE]
    if unknown:
        raise ValueError(f"unknown profile setting(s) {', '.join(map(repr, unknown))}; settings are: "
                         f"{', '.join(OVERRIDABLE)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def _convert(name: str, text: str) -> Any:
    """A ``--set`` value as the type of the profile field ``name``."""
    hint = typing.get_type_hints(Profile)[name]
    text = text.strip()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):  # int | None
        if text.lower() in ("none", "all", ""):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        item = args[0]
        parts = [p for p in text.replace(",", " ").split() if p]
        if name == "taus":
            return tuple(parse_tau(p) for p in parts)
        return tuple(_scalar(name, item, p) for p in parts)
    if origin is dict:
        raise ValueError(f"{name} cannot be set from the command line")
    return _scalar(name, hint, text)


def _scalar(name: str, kind: Any, text: str) -> Any:
    try:
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
    except ValueError:
        raise ValueError(f"{name} expects {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return text


def parse_overrides(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["num_steps=12", "epochs=1"]`` (or a mapping of strings) -> typed profile overrides; bad input raises ValueError."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, Mapping) else []
    if not isinstance(items, Mapping):
        parsed = []
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
            parsed.append((key.strip(), value))
        pairs = parsed
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in OVERRIDABLE:
            raise ValueError(f"unknown profile setting {key!r}; settings are: {', '.join(OVERRIDABLE)}")
        out[key] = _convert(key, value) if isinstance(value, str) else value
    return out


def parse_tau(text: str | float) -> float:
    """Membrane time constant from user input: a positive number or 'inf' (the IF neuron)."""
    try:
        tau = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"tau_m must be a positive number or 'inf', got {text!r}") from None
    if math.isnan(tau) or tau <= 0:
        raise ValueError(f"tau_m must be a positive number or 'inf', got {text!r}")
    return tau


def format_tau(tau_m: float) -> str:
    """'inf' for the IF neuron, else the exact shortest decimal form ('30', '100', '2.5', '30.000001')."""
    tau = float(tau_m)
    if math.isinf(tau):
        return "inf"
    return str(int(tau)) if tau.is_integer() and abs(tau) < 1e15 else repr(tau)
