"""GPU numerics settings, set explicitly and recorded with every run.

:func:`configure_determinism` fixes the four switches that decide whether a CUDA run repeats
itself and matches the CPU up to float32 rounding:

* TF32 off (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``). TF32
  rounds the weights to a 10-bit mantissa inside convolutions and matrix products: a current moves
  by ~1e-3 relative, which flips threshold crossings (Eq. 2) and so changes spikes, gradients and
  accuracies against float32 and the CPU. Cost: convolutions and linear layers run on the float32
  units instead of the TF32 tensor cores, whose dense peak is ~7x higher on an H100/H200 (67 vs
  ~495 TFLOPS); see the README's "Sizing the paper protocol". ``LEAKLIB_TF32=1`` (or ``tf32=True``)
  turns it on for speed, and the run records that it did.
* cuDNN deterministic algorithms on, autotuning (``cudnn.benchmark``) off: the autotuner may pick a
  different convolution algorithm (different summation order) in each process, so a resumed run
  would not end with the same numbers as an uninterrupted one. Cost: cuDNN is restricted to its
  deterministic algorithms and does not time the candidates; how much slower that is depends on
  the layer and the GPU (not measured here; convolution backward is where it shows).

The leaklib kernels themselves (the Triton neuron scan) are deterministic: one thread per neuron,
no atomics.
"""

from __future__ import annotations

import os

import torch

__all__ = ["configure_determinism", "determinism_settings", "tf32_requested"]


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def tf32_requested() -> bool:
    """Whether ``LEAKLIB_TF32`` asks for TF32 (what :func:`configure_determinism` sets by default)."""
    return bool(_env_flag("LEAKLIB_TF32"))


def determinism_settings() -> dict:
    """The current values of the switches :func:`configure_determinism` sets (and the precisions they imply)."""
    return {
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def configure_determinism(device: torch.device | str = "cpu", *, tf32: bool | None = None,
                          deterministic: bool = True) -> dict:
    """Set TF32 and cuDNN determinism explicitly (module docstring) and return the settings in force.

    ``tf32=None`` reads ``LEAKLIB_TF32`` (default off). The flags are process-wide and are set
    whatever ``device`` is (on the CPU they have no effect but are recorded all the same); the
    returned dict adds ``device`` and, on CUDA, the GPU's name and compute capability, for
    ``config.json``.
    """
    if tf32 is None:
        tf32 = tf32_requested()
    dev = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
    settings = {"device": str(dev), **determinism_settings()}
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        settings["gpu"] = torch.cuda.get_device_name(index)
        settings["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
        settings["cudnn_version"] = torch.backends.cudnn.version()
    return settings
