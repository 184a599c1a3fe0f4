"""Sparsity and its cost (Sec. 4.5, Table 1 rows 4-5, Fig. 6): spike rates, synaptic operations, ENWSI.

* Spikes (%) = hidden-layer spikes / (hidden neurons x T) x 100, mean over images (Table 1 row 4);
  the hidden layers are the IF/LIF layers (not the pooling neurons of [21], which are IF whatever tau_m).
* Synaptic operations per image: each input spike of a block (``|spike|``, input-layer spikes
  included) times the synapses it drives, summed over steps and blocks (Table 1 row 5).
* ENWSI: L2 norm of ``W_l O_{l-1}[t]`` per hidden layer, mean over steps and images (Fig. 6).
"""

from __future__ import annotations

from typing import Any

import torch

from .models import SNN, Record

__all__ = ["spike_rates", "synaptic_ops", "enwsi"]


def _check_record(record: Record, model: SNN | None) -> None:
    if model is not None and [tuple(c.shape[1:]) for c in record.spike_counts] != list(model.hidden_shapes):
        raise ValueError("record does not come from this model: hidden-layer shapes differ")


def spike_rates(record: Record, model: SNN | None = None) -> dict[str, Any]:
    """Spikes (%) of the hidden layers (Sec. 4.5, Table 1 row 4): ``{"overall": float, "per_layer": [float]}``."""
    _check_record(record, model)
    if not record.spike_counts:
        raise ValueError("record has no hidden layers")
    totals = [c.flatten(1).sum(1, dtype=torch.float64).mean().item() for c in record.spike_counts]  # per image
    sizes = [c[0].numel() for c in record.spike_counts]
    per_layer = [100.0 * s / (n * record.num_steps) for s, n in zip(totals, sizes)]
    overall = 100.0 * sum(totals) / (sum(sizes) * record.num_steps)
    return {"overall": overall, "per_layer": per_layer}


@torch.no_grad()
def synaptic_ops(record: Record, model: SNN) -> torch.Tensor:
    """Synaptic operations per image ``[B]`` (Sec. 4.5, Table 1 row 5): input spikes x synapses driven, all blocks.

    With spiking pooling every spike into a 2x2 window drives one pooling synapse, and every pooling
    neuron's spike the synapses of the convolution or FC layer above; with average pooling each
    input spike drives the synapses of its pooled position.
    """
    if len(record.input_counts) != len(model.blocks) or len(record.pool_counts) != len(model.blocks):
        raise ValueError(f"record has {len(record.input_counts)} block inputs, model {len(model.blocks)} blocks")
    total = None
    for block, counts, pooled in zip(model.blocks, record.input_counts, record.pool_counts):
        if pooled is not None:  # linear in the counts: summing over T first is exact
            ops = counts.flatten(1).sum(1, dtype=torch.float64) + block.synapse_map(pooled).flatten(1).sum(
                1, dtype=torch.float64)
        else:
            ops = block.synapse_map(counts).flatten(1).sum(1, dtype=torch.float64)
        total = ops if total is None else total + ops
    assert total is not None
    return total


def enwsi(record: Record) -> list[float]:
    """ENWSI per hidden layer (Sec. 4.5, Fig. 6): ``||W_l O_{l-1}[t]||_2``, mean over steps and images."""
    return [norms.double().mean().item() for norms in record.current_norms]
