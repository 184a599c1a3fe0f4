"""The three run profiles (smoke, quick, paper): the one place where their settings live."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .models import ARCHITECTURES, INIT_GAIN

__all__ = ["Profile", "PROFILES", "DEFAULT_PROFILE", "get_profile", "parse_tau", "format_tau"]


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
    weight_decay: float
    milestones: tuple[float, ...]       # lr drops, as fractions of the epochs (paper: 70/150, 100/150)
    lr_gamma: float
    dropout: float
    v_th: float = 1.0
    eps: float = 0.0                    # leak correction of the Eq. 5 surrogate (see the training chapter)
    init_gain: float = INIT_GAIN        # weights ~ N(0, init_gain^2 / fan_in) (leaklib.models.INIT_GAIN)
    sse_window: float = 20 / 150        # Table 1 averages the SSE over the last 20 of 150 epochs
    train_subset: int | None = None     # stratified subset sizes (smoke); None = the whole split
    test_subset: int | None = None
    eval_batch_size: int = 256
    analysis_images: int | None = None  # test images used by the analyses (None = all)
    architectures: dict[str, str] = field(default_factory=lambda: dict(ARCHITECTURES))

    def milestone_epochs(self) -> list[int]:
        """Epochs at which the learning rate drops (scaled from the paper's 70 and 100 of 150)."""
        return sorted({max(1, round(f * self.epochs)) for f in self.milestones if round(f * self.epochs) < self.epochs})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["taus"] = [format_tau(t) for t in self.taus]
        return d


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="seconds: tests and CI; a digits subset, tiny T, 2 epochs, 1 seed",
        datasets=("digits",), taus=(30.0, 100.0, math.inf), seeds=(1,),
        num_steps=8, epochs=2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4,
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.0,
        train_subset=160, test_subset=60, eval_batch_size=64, analysis_images=40, init_gain=1.0,
        architectures={**ARCHITECTURES, "digits": "8x8x1-8C3-2P-16C3-2P-32FC-10o"},
    ),
    "quick": Profile(
        name="quick",
        description="default: scikit-learn digits on a 2-core CPU, whole book in minutes",
        datasets=("digits",), taus=(30.0, 100.0, math.inf), seeds=(1, 2, 3),
        num_steps=40, epochs=12, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4,
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.0,
        eval_batch_size=360, analysis_images=None, init_gain=1.0,
    ),
    "paper": Profile(
        name="paper",
        description="the paper's protocol (Sec. 4.1): CIFAR-10 and SVHN, T=100, 150 epochs, batch 64, 3 seeds; GPU",
        datasets=("cifar10", "svhn"), taus=(30.0, 100.0, math.inf), seeds=(1, 2, 3),
        num_steps=100, epochs=150, batch_size=64, lr=0.08, momentum=0.0, weight_decay=5e-4,
        milestones=(70 / 150, 100 / 150), lr_gamma=0.2, dropout=0.25,
        eval_batch_size=256, analysis_images=None,
    ),
}

DEFAULT_PROFILE = "quick"


def get_profile(name: str, **overrides) -> Profile:
    """The named profile, optionally with fields replaced (e.g. ``epochs=3``)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


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
    """'inf' for the IF neuron, else the shortest decimal form ('30', '100', '2.5')."""
    return "inf" if math.isinf(tau_m) else f"{tau_m:g}"
