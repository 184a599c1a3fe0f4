"""Signed Poisson rate coding and the noisy spike generation of Algorithm 1.

* Images are normalised per image to zero mean, then scaled to [-1, 1] (Sec. 4.1).
* Clean coding, fresh randomness each step: ``o = sign(x) * (rand < |x|)``.
* Scenario 1 (noise before coding): ``x_c = x + xi``, then coded as above (binary spikes).
* Scenario 2 (noise after coding): ``o = sign(x) * (rand < |x|) + xi`` (perturbed spikes).
* Gaussian noise ``xi ~ N(0, sigma_s^2)``; impulse (salt-and-pepper) noise replaces an entry by
  -1 or +1 with probability ``p_s`` (scenario 1: the pixel value; scenario 2: the spike value).

A severity s = 0..8 names a noise level (sigma_s or p_s) through a :class:`SeverityTable`, per
scenario and noise type: severity 0 is clean, severities 1..8 are the table's levels. The a-priori
table :data:`SEVERITY_TABLE` (sigma_s = 0.1 s, p_s = 0.05 s) is the default and the fallback; the
tables the book uses are calibrated on the trained IF networks (:func:`leaklib.robustness.calibrate_table`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "NOISE_TYPES",
    "SCENARIOS",
    "NUM_SEVERITIES",
    "SEVERITY_TABLE",
    "SeverityTable",
    "APRIORI_RULE",
    "noise_level",
    "check_level",
    "normalize_images",
    "poisson_spikes",
    "noisy_spikes",
    "image_batches",
]

NOISE_TYPES: tuple[str, ...] = ("gaussian", "impulse")
SCENARIOS: tuple[int, ...] = (1, 2)
NUM_SEVERITIES = 8

#: Noise strength per severity s = 1..8: Gaussian standard deviation sigma_s = 0.1 s, impulse
#: probability p_s = 0.05 s (design note; the paper does not give its values).
SEVERITY_TABLE: dict[str, tuple[float, ...]] = {
    "gaussian": tuple(round(0.1 * s, 10) for s in range(1, NUM_SEVERITIES + 1)),
    "impulse": tuple(round(0.05 * s, 10) for s in range(1, NUM_SEVERITIES + 1)),
}


def noise_level(noise: str, severity: int) -> float:
    """sigma_s (Gaussian) or p_s (impulse) for severity 0..8; severity 0 is clean (0.0)."""
    if noise not in SEVERITY_TABLE:
        raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
    if isinstance(severity, bool) or int(severity) != severity or not 0 <= severity <= NUM_SEVERITIES:
        raise ValueError(f"severity must be an integer in 0..{NUM_SEVERITIES}, got {severity!r}")
    return 0.0 if severity == 0 else SEVERITY_TABLE[noise][int(severity) - 1]


def check_level(noise: str, level: float) -> float:
    """A noise level as a float: sigma_s >= 0 (Gaussian) or p_s in [0, 1] (impulse); anything else raises."""
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level) or level < 0:
        raise ValueError(f"noise level must be a finite number >= 0, got {level!r}")
    if noise == "impulse" and level > 1:
        raise ValueError(f"impulse probability p_s must be in [0, 1], got {level!r}")
    return float(level)


#: The ``rule`` of the a-priori table (:meth:`SeverityTable.apriori`).
APRIORI_RULE = "a priori: sigma_s = 0.1 s (Gaussian), p_s = 0.05 s (impulse), s = 1..8 (design note)"


def _condition(scenario: int, noise: str) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be 1 or 2, got {scenario!r}")
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
    return f"{int(scenario)}/{noise}"


@dataclass(frozen=True)
class SeverityTable:
    """Noise level of severities 1..8 per scenario and noise type, with the rule that chose each row.

    ``levels``: ``{"<scenario>/<noise>": (level_1, ..., level_8)}`` for all four conditions;
    ``rules``: the same keys, a sentence saying how the row was chosen (calibrated, or the a-priori
    table and why); ``info``: optional per-condition calibration record (JSON-ready). Severity 0 is
    always clean (level 0).
    """

    levels: Mapping[str, tuple[float, ...]]
    rules: Mapping[str, str]
    info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = {_condition(sc, n) for sc in SCENARIOS for n in NOISE_TYPES}
        if set(self.levels) != keys or set(self.rules) != keys:
            raise ValueError(f"a severity table needs levels and rules for exactly {sorted(keys)}, "
                             f"got {sorted(self.levels)} and {sorted(self.rules)}")
        levels = {}
        for key, row in self.levels.items():
            noise = key.split("/")[1]
            row = tuple(check_level(noise, float(v)) for v in row)
            if len(row) != NUM_SEVERITIES or any(b < a for a, b in zip(row, row[1:])):
                raise ValueError(f"{key}: need {NUM_SEVERITIES} non-decreasing levels, got {row}")
            levels[key] = row
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "rules", {k: str(v) for k, v in self.rules.items()})
        object.__setattr__(self, "info", {k: dict(v) for k, v in self.info.items()})

    @classmethod
    def apriori(cls, why: str = "") -> "SeverityTable":
        """:data:`SEVERITY_TABLE` for both scenarios; ``why`` (e.g. why calibration was impossible) joins the rule."""
        rule = APRIORI_RULE + (f"; {why}" if why else "")
        keys = [_condition(sc, n) for sc in SCENARIOS for n in NOISE_TYPES]
        return cls({k: SEVERITY_TABLE[k.split("/")[1]] for k in keys}, {k: rule for k in keys})

    def level(self, scenario: int, noise: str, severity: int) -> float:
        """sigma_s or p_s of ``severity`` 0..8 in ``scenario`` for ``noise`` (0.0 at severity 0)."""
        key = _condition(scenario, noise)
        if isinstance(severity, bool) or int(severity) != severity or not 0 <= severity <= NUM_SEVERITIES:
            raise ValueError(f"severity must be an integer in 0..{NUM_SEVERITIES}, got {severity!r}")
        return 0.0 if severity == 0 else self.levels[key][int(severity) - 1]

    def rule(self, scenario: int, noise: str) -> str:
        return self.rules[_condition(scenario, noise)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the cache stores it; it enters the cache keys of the analyses that use it)."""
        return {"levels": {k: list(v) for k, v in self.levels.items()}, "rules": dict(self.rules),
                "info": {k: dict(v) for k, v in self.info.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SeverityTable":
        return cls({k: tuple(v) for k, v in data["levels"].items()}, data["rules"], data.get("info", {}))

    def frame(self):
        """One row per scenario, noise and severity 0..8: scenario, noise, severity, level, rule."""
        import pandas as pd

        rows = [{"scenario": sc, "noise": n, "severity": s, "level": self.level(sc, n, s), "rule": self.rule(sc, n)}
                for sc in SCENARIOS for n in NOISE_TYPES for s in range(NUM_SEVERITIES + 1)]
        return pd.DataFrame(rows, columns=["scenario", "noise", "severity", "level", "rule"])


_APRIORI = SeverityTable.apriori()


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Per image ``[..., C, H, W]``: subtract the mean, divide by the largest magnitude (-> [-1, 1])."""
    if images.dim() < 3:
        raise ValueError(f"images must be [..., C, H, W], got shape {tuple(images.shape)}")
    dims = (-3, -2, -1)
    centred = images - images.mean(dim=dims, keepdim=True)
    scale = centred.abs().amax(dim=dims, keepdim=True)
    return centred / torch.where(scale > 0, scale, torch.ones_like(scale))


def _shape(x: torch.Tensor, num_steps: int | None) -> tuple[int, ...]:
    if num_steps is None:
        return tuple(x.shape)
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    return (int(num_steps),) + tuple(x.shape)


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _code(x: torch.Tensor, rand: torch.Tensor) -> torch.Tensor:
    """Signed rate coding of (possibly noisy) intensities ``x`` against uniform numbers ``rand``."""
    return torch.sign(x) * (rand < x.abs()).to(x.dtype)


def poisson_spikes(x: torch.Tensor, generator: torch.Generator | None = None,
                   num_steps: int | None = None) -> torch.Tensor:
    """Signed Poisson spikes of intensities ``x`` in [-1, 1]: one step, or ``[num_steps, *x.shape]``."""
    shape = _shape(x, num_steps)
    # _code's numbers, bit for bit (signed zeros too), in place on the uniform draws: the comparison
    # writes 1.0/0.0 and the sign of the image is broadcast, never expanded over the steps
    return _uniform(shape, x, generator).lt_(x.abs()).mul_(torch.sign(x))


def _impulse(shape: tuple[int, ...], like: torch.Tensor, p: float,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of entries hit by salt-and-pepper noise (probability ``p``) and their values (+-1)."""
    hit = _uniform(shape, like, generator) < p
    value = torch.where(_uniform(shape, like, generator) < 0.5, -1.0, 1.0).to(like.dtype)
    return hit, value


def noisy_spikes(x: torch.Tensor, scenario: Literal[1, 2], noise: str, severity: int | None = None,
                 generator: torch.Generator | None = None, num_steps: int | None = None, *,
                 table: SeverityTable | None = None, level: float | None = None) -> torch.Tensor:
    """Spike-inputs under noise, Algorithm 1 (scenario 1 or 2, Gaussian or impulse).

    The noise level is ``table``'s for ``severity`` 0..8 (default table: the a-priori
    :data:`SEVERITY_TABLE`), or given directly as ``level`` (sigma_s or p_s; then no severity).
    """
    _condition(scenario, noise)
    if (severity is None) == (level is None):
        raise ValueError("give either a severity (read through the table) or a level, not both or neither")
    if level is not None:
        level = check_level(noise, level)
    else:
        level = (table or _APRIORI).level(scenario, noise, severity)
    if level == 0.0:
        return poisson_spikes(x, generator, num_steps)
    shape = _shape(x, num_steps)
    x = x.expand(shape)
    if scenario == 1:
        if noise == "gaussian":
            x_c = x + level * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            hit, value = _impulse(shape, x, level, generator)
            x_c = torch.where(hit, value, x)
        return _code(x_c, _uniform(shape, x, generator))
    spikes = _code(x, _uniform(shape, x, generator))
    if noise == "gaussian":
        return spikes + level * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    hit, value = _impulse(shape, x, level, generator)
    return torch.where(hit, value, spikes)


def image_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised images (Sec. 4.1) and labels in batches of ``batch_size`` on ``device``; raw images are [N, C, H, W]."""
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images must be [N, C, H, W] and labels [N], got {tuple(images.shape)}, "
                         f"{tuple(labels.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(labels), batch_size):
        yield (normalize_images(images[start:start + batch_size].to(device)),
               labels[start:start + batch_size].to(device))
