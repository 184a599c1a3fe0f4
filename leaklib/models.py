"""VGG-style SNNs built from the paper's spec strings (Sec. 4.1) and run as in Algorithm 2.

Spec tokens: ``32x32x3`` input (H x W x C), ``64C3`` 3x3 convolution with 64 output channels
(padding 1, no bias), ``2P`` 2x2 average pooling, ``1024FC`` fully connected, ``10o`` the output
layer. The paper writes ``2s`` before the last FC layer of both nets; we read it as ``2P`` (the
same pooling as every other; in [21]'s VGG9 all three poolings are alike).

A network is a chain of *blocks*. A block is the linear map between two layers of neurons
(optional 2x2 average pooling, in [21] followed by a layer of non-leaky spiking pooling neurons,
optional flattening, then a convolution or FC layer) followed by IF/LIF neurons, or, for the last
block, by the non-spiking output integrator ``u_L[t] = beta u_L[t-1] + W_L O_{L-1}[t]`` whose
final value gives the prediction ``u_L[T]/T``.

Multi-step execution (default): each block runs its linear map once over the ``[T*B, ...]``
batch, then the neurons scan over ``T``. ``method="stepwise"`` runs Algorithm 2 literally, one
time step through all layers at a time; both give the same spikes and gradients.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .neurons import (LIFNeuron, NotADropoutMask, decay, decay_factor, leaky_integrate, lif_pool_available,
                      lif_pool_multistep)

__all__ = [
    "ARCHITECTURES",
    "INIT_GAIN",
    "POOLINGS",
    "POOL_THRESHOLD",
    "LayerSpec",
    "parse_spec",
    "Block",
    "Record",
    "SNN",
    "build_snn",
]

#: Network of each dataset: CIFAR-10 and SVHN from Sec. 4.1; digits is our small member of the
#: same family for the embedded default profile (8x8 grey images, 10 classes).
ARCHITECTURES: dict[str, str] = {
    "cifar10": "32x32x3-64C3-64C3-2P-128C3-128C3-2P-256C3-256C3-256C3-2P-1024FC-10o",
    "svhn": "32x32x3-64C3-64C3-2P-256C3-256C3-256C3-2P-1024FC-10o",
    "digits": "8x8x1-16C3-2P-32C3-2P-128FC-10o",
}

#: Weights are drawn from N(0, INIT_GAIN**2 / fan_in), no biases: He initialisation (gain sqrt 2),
#: as [21]'s VGG9 (``normal_(0, sqrt(2 / n))`` for conv and linear layers).
INIT_GAIN = math.sqrt(2.0)

#: Pooling after a 2x2 average: "spiking" ([21]: non-leaky pooling neurons, threshold 0.75) or "average".
POOLINGS: tuple[str, ...] = ("spiking", "average")
#: Threshold of [21]'s pooling neurons (``Pooling_sNeuron(mem, 0.75)``).
POOL_THRESHOLD = 0.75
#: An eval forward on the CPU runs large batches in slices whose largest tensor stays below this.
EVAL_CHUNK_BYTES = 24 << 20

def _keep_freed_memory() -> None:
    """Once per process: ask glibc's malloc to keep freed memory for reuse instead of unmapping it.

    A training step allocates and frees the same large tensors every time (currents, spikes,
    gradients: up to ~13 MB each for the digits net at T=100). By default glibc serves such blocks
    with mmap and returns them on free, so every step page-faults them in again: 2-10 ms of system
    time per step, measured. Raising the mmap and trim thresholds keeps them in the heap.
    ``LEAKLIB_MALLOPT=0`` leaves malloc alone; nothing happens where there is no glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    if os.environ.get("LEAKLIB_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's maximum) from the heap


_ALLOCATOR_TUNED = False

_TOKEN = re.compile(r"^(?:(?P<h>\d+)x(?P<w>\d+)x(?P<c>\d+)|(?P<n>\d+)(?P<kind>C|P|s|FC|o)(?P<k>\d+)?)$")


@dataclass(frozen=True)
class LayerSpec:
    """One token of a spec string: ``conv`` (size = channels, kernel), ``pool`` (size = window), ``fc``, ``output``."""

    kind: Literal["conv", "pool", "fc", "output"]
    size: int
    kernel: int = 0


def parse_spec(spec: str) -> tuple[tuple[int, int, int], list[LayerSpec]]:
    """Parse ``'32x32x3-64C3-2P-1024FC-10o'`` into the input shape ``(C, H, W)`` and the layers."""
    tokens = [t.strip() for t in spec.strip().split("-")]
    if len(tokens) < 2:
        raise ValueError(f"spec {spec!r} needs an input token and at least an output layer")
    first = _TOKEN.match(tokens[0])
    if not first or first.group("h") is None:
        raise ValueError(f"spec {spec!r} must start with the input shape HxWxC, e.g. 32x32x3")
    input_shape = (int(first.group("c")), int(first.group("h")), int(first.group("w")))
    layers: list[LayerSpec] = []
    for token in tokens[1:]:
        m = _TOKEN.match(token)
        if not m or m.group("kind") is None:
            raise ValueError(f"unknown token {token!r} in spec {spec!r} (expected like 64C3, 2P, 1024FC, 10o)")
        n, kind, k = int(m.group("n")), m.group("kind"), m.group("k")
        if n < 1:
            raise ValueError(f"token {token!r} in spec {spec!r} must have a positive size")
        if kind == "C":
            if k is None or int(k) % 2 == 0:
                raise ValueError(f"convolution {token!r} needs an odd kernel size, e.g. 64C3")
            layers.append(LayerSpec("conv", n, int(k)))
        elif k is not None:
            raise ValueError(f"token {token!r} in spec {spec!r}: only convolutions take a kernel size")
        elif kind in ("P", "s"):
            layers.append(LayerSpec("pool", n))
        elif kind == "FC":
            layers.append(LayerSpec("fc", n))
        else:
            layers.append(LayerSpec("output", n))
    if layers[-1].kind != "output" or sum(layer.kind == "output" for layer in layers) != 1:
        raise ValueError(f"spec {spec!r} must end with exactly one output layer like 10o")
    if len(layers) >= 2 and layers[-2].kind == "pool":
        raise ValueError(f"spec {spec!r}: pooling cannot feed the output layer directly without a weight layer")
    return input_shape, layers


class _AvgPool2x2(torch.autograd.Function):
    """2x2 average pooling as two strided adds (4x faster than F.avg_pool2d on small CPU maps; same values)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        pairs = x[..., 0::2] + x[..., 1::2]
        return (pairs[..., 0::2, :] + pairs[..., 1::2, :]).mul_(0.25)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (grad * 0.25).repeat_interleave(2, dim=3).repeat_interleave(2, dim=2)


class Block(nn.Module):
    """Linear map between two neuron layers: ``[2x2 avg-pool [-> pooling neurons]] -> [flatten] -> conv | linear``.

    With ``pooling="spiking"`` ([21]) the averaged spikes drive a layer of non-leaky pooling neurons
    (IF, threshold :data:`POOL_THRESHOLD`, reset to 0, surrogate factor 1, no leak correction), whose
    spikes feed the convolution; with ``"average"`` the averaged spike values are passed on directly.
    """

    def __init__(self, in_shape: tuple[int, ...], pool: int, layer: LayerSpec, init_gain: float = 1.0,
                 pooling: str = "average", method: Literal["fused", "stepwise"] = "fused") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        self.in_shape = tuple(in_shape)
        self.pool = pool
        shape = in_shape
        if pool > 1:
            if len(shape) != 3 or shape[1] % pool or shape[2] % pool:
                raise ValueError(f"cannot {pool}x{pool}-pool a map of shape {shape}")
            shape = (shape[0], shape[1] // pool, shape[2] // pool)
        self.pool_shape: tuple[int, ...] | None = shape if pool > 1 else None
        self.pool_neuron = (LIFNeuron(math.inf, POOL_THRESHOLD, grad_scale=1.0, method=method)
                            if pool > 1 and pooling == "spiking" else None)
        self.flatten = layer.kind != "conv" and len(shape) == 3
        if layer.kind == "conv":
            if len(shape) != 3:
                raise ValueError("a convolution cannot follow a fully connected layer")
            self.linear: nn.Module = nn.Conv2d(shape[0], layer.size, layer.kernel, padding=layer.kernel // 2,
                                               bias=False)
            self.out_shape: tuple[int, ...] = (layer.size, shape[1], shape[2])
        else:
            fan_in = math.prod(shape)
            self.linear = nn.Linear(fan_in, layer.size, bias=False)
            self.out_shape = (layer.size,)
        weight = self.linear.weight
        fan_in = weight[0].numel()
        with torch.no_grad():  # N(0, init_gain**2 / fan_in), no biases; He (gain sqrt 2) as [21]
            weight.normal_(0.0, init_gain / math.sqrt(fan_in))

    def _avg_pool(self, x: torch.Tensor) -> torch.Tensor:
        # NCHW on the CPU: two strided adds (1.2-1.9x faster fwd+bwd than avg_pool2d on these maps);
        # channels-last (what the CPU convolutions write): avg_pool2d's own kernels, 3-6x faster
        if self.pool == 2 and not x.is_cuda and x.is_contiguous():
            return _AvgPool2x2.apply(x)
        return F.avg_pool2d(x, self.pool)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.linear, nn.Conv2d) and not x.is_cuda:
            # channels-last on the CPU (the weight's layout selects oneDNN's kernels): the same
            # convolution, forward and backward ~1.5-3x faster on these small maps than NCHW
            weight = self.linear.weight.to(memory_format=torch.channels_last)  # restrides C=1 too
            return F.conv2d(x, weight, None, self.linear.stride, self.linear.padding)
        return self.linear(x.flatten(1) if self.flatten else x)

    def forward(self, x: torch.Tensor, rec: Record | None = None) -> torch.Tensor:
        """Currents ``[T, B, *out_shape]`` from the layer below's spikes ``[T, B, *in_shape]`` (all steps at once)."""
        num_steps, batch = x.shape[:2]
        flat = x.flatten(0, 1)
        if self.pool > 1:
            flat = self._avg_pool(flat)
            if self.pool_neuron is not None:
                pooled = self.pool_neuron(flat.unflatten(0, (num_steps, batch)))
                if rec is not None:
                    rec.pool_counts.append(pooled.detach().sum(0))
                flat = pooled.flatten(0, 1)
            elif rec is not None:
                rec.pool_counts.append(None)
        elif rec is not None:
            rec.pool_counts.append(None)
        return self._map(flat).unflatten(0, (num_steps, batch))

    def forward_pooled(self, pooled: torch.Tensor, rec: Record | None = None,
                       pool_counts: torch.Tensor | None = None) -> torch.Tensor:
        """Currents ``[T, B, *out_shape]`` from the spikes of this block's pooling neurons (a fused scan below)."""
        num_steps, batch = pooled.shape[:2]
        if rec is not None:
            rec.pool_counts.append(pool_counts)
        return self._map(pooled.flatten(0, 1)).unflatten(0, (num_steps, batch))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Currents ``[B, *out_shape]`` of one time step (Algorithm 2 step by step; pooling neurons keep state)."""
        if self.pool > 1:
            x = self._avg_pool(x)
            if self.pool_neuron is not None:
                x = self.pool_neuron.step(x)
        return self._map(x)

    @torch.no_grad()
    def synapse_map(self, x: torch.Tensor) -> torch.Tensor:
        """The linear map with every weight set to 1 (counts the synapses driven by ``x``).

        ``x`` is what enters the convolution or FC layer: with spiking pooling the pooling neurons'
        spikes; with average pooling the block's input, pooled as a sum (each input spike drives the
        synapses of its pooled position).
        """
        if self.pool > 1 and self.pool_neuron is None:
            x = F.avg_pool2d(x, self.pool, divisor_override=1)
        if self.flatten:
            x = x.flatten(1)
        ones = torch.ones_like(self.linear.weight)
        if isinstance(self.linear, nn.Conv2d):
            return F.conv2d(x, ones, padding=self.linear.padding)
        return F.linear(x, ones)


@dataclass
class Record:
    """What the analyses need from one forward pass (all detached).

    ``spike_counts[l]``: spikes of hidden layer ``l`` summed over T, ``[B, *shape_l]``.
    ``input_counts[l]``: ``|input|`` of block ``l`` summed over T, ``[B, *in_shape_l]`` (block 0 sees the
    input spikes). ``pool_counts[l]``: spikes of block ``l``'s pooling neurons summed over T, or None
    (no spiking pooling). ``current_norms[l]``: L2 norm over neurons of ``W_l O_{l-1}[t]`` of hidden
    layer l, ``[T, B]``. ``output_currents``: ``W_L O_{L-1}[t]``, ``[T, B, classes]``.
    With ``counts_only`` (what the trainer takes each step) only ``spike_totals`` is filled: the
    spikes of each hidden layer summed over T, batch and neurons (0-dim tensors).
    """

    num_steps: int
    counts_only: bool = False
    spike_counts: list[torch.Tensor] = field(default_factory=list)
    spike_totals: list[torch.Tensor] = field(default_factory=list)
    input_counts: list[torch.Tensor] = field(default_factory=list)
    pool_counts: list[torch.Tensor | None] = field(default_factory=list)
    current_norms: list[torch.Tensor] = field(default_factory=list)
    output_currents: torch.Tensor | None = None


class SNN(nn.Module):
    """A spiking VGG-style network (Sec. 4.1) with IF/LIF hidden neurons and a leaky output integrator.

    ``leak_grad``, ``correction`` (:mod:`leaklib.neurons`) and ``pooling`` (:class:`Block`) choose the
    training semantics; the defaults are those of [21], the paper's training protocol.
    """

    def __init__(self, spec: str, tau_m: float, v_th: float = 1.0, eps: float = 0.0, dropout: float = 0.0,
                 method: Literal["fused", "stepwise"] = "fused", init_gain: float = INIT_GAIN,
                 leak_grad: str = "detached", correction: str = "lee2020", pooling: str = "spiking") -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        decay_factor(tau_m)  # validates tau_m
        self.spec, self.tau_m, self.v_th, self.eps, self.dropout = spec, float(tau_m), float(v_th), float(eps), dropout
        self.method, self.leak_grad, self.correction, self.pooling = method, leak_grad, correction, pooling
        self.input_shape, layers = parse_spec(spec)
        blocks, neurons = [], []
        shape: tuple[int, ...] = self.input_shape
        pool = 1
        for layer in layers:
            if layer.kind == "pool":
                pool *= layer.size
                continue
            block = Block(shape, pool, layer, init_gain, pooling=pooling, method=method)
            blocks.append(block)
            shape, pool = block.out_shape, 1
            if layer.kind != "output":
                neurons.append(LIFNeuron(tau_m, v_th, eps, method=method, leak_grad=leak_grad,  # type: ignore[arg-type]
                                         correction=correction))  # type: ignore[arg-type]
        self.blocks = nn.ModuleList(blocks)
        self.neurons = nn.ModuleList(neurons)
        self.num_classes = layers[-1].size

    @property
    def hidden_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each hidden layer of neurons (one entry per LIF/IF layer)."""
        return [block.out_shape for block in self.blocks[:-1]]

    @property
    def pool_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each layer of spiking pooling neurons (empty with average pooling)."""
        return [block.pool_shape for block in self.blocks if block.pool_neuron is not None]  # type: ignore[misc]

    def _dropout_masks(self, batch: int, device: torch.device, dtype: torch.dtype,
                       generator: torch.Generator | None) -> list[torch.Tensor | None]:
        """One mask per hidden layer and sample, shared by all time steps (Lee et al. 2020)."""
        if not (self.training and self.dropout > 0):
            return [None] * len(self.neurons)
        keep = 1.0 - self.dropout
        return [(torch.rand((batch,) + shape, generator=generator, device=device) < keep).to(dtype) / keep
                for shape in self.hidden_shapes]

    def forward(self, spikes: torch.Tensor, generator: torch.Generator | None = None,
                record: bool | str = False) -> torch.Tensor | tuple[torch.Tensor, Record]:
        """Prediction ``u_L[T]/T`` ``[B, classes]`` from input spikes ``[T, B, C, H, W]``; with a :class:`Record`.

        ``record=True`` (or ``"full"``) keeps everything the analyses use; ``record="counts"`` only
        each hidden layer's total spike count (cheap: what the trainer logs).
        """
        if spikes.dim() != 5 or tuple(spikes.shape[2:]) != self.input_shape:
            raise ValueError(f"expected input spikes [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(spikes.shape)}")
        if record not in (False, True, "full", "counts"):
            raise ValueError(f"record must be False, True, 'full' or 'counts', got {record!r}")
        if not spikes.is_cuda:
            _keep_freed_memory()
        num_steps, batch = spikes.shape[:2]
        chunk = self._eval_chunk(spikes)
        if chunk < batch:
            parts = [self.forward(spikes[:, start:start + chunk], generator, record)
                     for start in range(0, batch, chunk)]
            return _concat(parts, record)  # type: ignore[arg-type]
        masks = self._dropout_masks(batch, spikes.device, spikes.dtype, generator)
        if self.method == "stepwise":
            if record:
                raise ValueError("record=True needs the multi-step method")
            return self._forward_stepwise(spikes, masks)
        rec = Record(num_steps=num_steps, counts_only=record == "counts") if record else None
        full = rec is not None and not rec.counts_only
        x = spikes
        pooled = None  # (pooling neurons' spikes, their counts, input counts) when the scan below pooled
        for index, block in enumerate(self.blocks):
            if pooled is not None:
                x, pool_counts, input_counts = pooled
                if full:  # |o * m| summed over T: the counts times the dropout mask
                    mask = masks[index - 1]
                    counts_in = input_counts if mask is None else input_counts * mask
                    rec.input_counts.append(counts_in)  # type: ignore[union-attr]
                currents = block.forward_pooled(x, rec if full else None, pool_counts)
            else:
                if full:
                    rec.input_counts.append(x.detach().abs().sum(0))  # type: ignore[union-attr]
                currents = block(x, rec if full else None)
            if index == len(self.neurons):
                if full:
                    rec.output_currents = currents.detach()  # type: ignore[union-attr]
                return self._readout(currents, rec)
            if full:
                rec.current_norms.append(currents.detach().flatten(2).norm(dim=2))  # type: ignore[union-attr]
            pooled = self._pool_fused(index, currents, masks[index])
            if pooled is not None:  # the layer's spikes (masked if so) went straight into the pooling
                counts = pooled[2]
            else:
                x = self.neurons[index](currents, masks[index])
                counts = x.detach().sum(0) if full else None
            if rec is not None:
                if full:
                    rec.spike_counts.append(counts)
                    rec.spike_totals.append(counts.sum())  # type: ignore[union-attr]
                else:
                    rec.spike_totals.append(x.detach().sum() if counts is None else counts.sum())
            if pooled is None and masks[index] is not None:
                x = x * masks[index]
        raise AssertionError("unreachable: the last block is the output layer")

    def _eval_chunk(self, spikes: torch.Tensor) -> int:
        """Images per pass of an eval forward on the CPU: each layer's ``[T*b, ...]`` within :data:`EVAL_CHUNK_BYTES`.

        Without gradient and in eval mode every image is computed on its own, so a large batch can
        run in slices (bit-identical predictions and records, tested) whose tensors glibc keeps for
        reuse and the caches hold: 0.48 instead of 0.79 ms per image for the digits net at T=100
        and batch 360, measured. Training, gradients, CUDA and the per-step method: one pass.
        """
        batch = spikes.shape[1]
        if spikes.is_cuda or self.training or torch.is_grad_enabled() or self.method != "fused":
            return batch
        shapes = [block.in_shape for block in self.blocks] + [block.out_shape for block in self.blocks]
        per_image = spikes.shape[0] * spikes.element_size() * max(math.prod(shape) for shape in shapes)
        return max(1, min(batch, EVAL_CHUNK_BYTES // per_image))

    def _pool_fused(self, index: int, currents: torch.Tensor, mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Hidden layer ``index``, the next block's 2x2 pooling and its pooling neurons as one CPU scan.

        Returns the pooling neurons' spikes, their counts and the layer's counts over T, or None where
        the fused scan does not apply (no spiking 2x2 pooling next, CUDA, no numba, the per-step
        method): then the layers run one after the other, with the same numbers. A dropout mask of
        the layer is applied inside the scan, before the pooling, as :meth:`forward` applies it.
        """
        neuron, nxt = self.neurons[index], self.blocks[index + 1]
        pool_neuron = nxt.pool_neuron
        if (pool_neuron is None or nxt.pool != 2 or neuron.method != "fused" or pool_neuron.method != "fused"
                or not lif_pool_available(currents)):
            return None
        try:
            spikes, counts, pool_counts = lif_pool_multistep(
                currents, neuron.tau_m, neuron.v_th, neuron.eps, leak_grad=neuron.leak_grad,
                correction=neuron.correction, grad_scale=neuron.grad_scale, pool_v_th=pool_neuron.v_th,
                pool_grad_scale=pool_neuron.scale, pool_channels_last=not nxt.flatten, mask=mask)
        except NotADropoutMask:  # a mask of other values (not from dropout): the layers one by one
            return None
        return spikes, pool_counts, counts

    def _readout(self, currents: torch.Tensor, rec: Record | None) -> torch.Tensor | tuple[torch.Tensor, Record]:
        prediction = leaky_integrate(currents, self.tau_m, self.leak_grad) / currents.shape[0]  # type: ignore[arg-type]
        return prediction if rec is None else (prediction, rec)

    def _forward_stepwise(self, spikes: torch.Tensor, masks: list[torch.Tensor | None]) -> torch.Tensor:
        """Algorithm 2 literally: every layer advances one time step at a time."""
        beta = decay_factor(self.tau_m)
        self._reset_neurons()
        u_out = None
        try:
            for t in range(spikes.shape[0]):
                x = spikes[t]
                for index, neuron in enumerate(self.neurons):
                    x = neuron.step(self.blocks[index].step(x))
                    if masks[index] is not None:
                        x = x * masks[index]
                current = self.blocks[-1].step(x)
                u_out = current if u_out is None else decay(u_out, beta, self.leak_grad) + current  # type: ignore[arg-type]
            for index, neuron in enumerate(self.neurons):
                neuron.finish(masks[index])  # [21]'s leak correction, as gradient hooks
        finally:
            self._reset_neurons()
        assert u_out is not None
        return u_out / spikes.shape[0]

    def _reset_neurons(self) -> None:
        for module in self.modules():
            if isinstance(module, LIFNeuron):
                module.reset()


def _concat(parts: list, record: bool | str) -> torch.Tensor | tuple[torch.Tensor, Record]:
    """The output of one forward from the outputs of forwards over consecutive slices of the batch."""
    if not record:
        return torch.cat(parts)
    predictions, records = zip(*parts)
    first: Record = records[0]

    def joined(name: str, dim: int) -> list:
        return [None if layer[0] is None else torch.cat(layer, dim)
                for layer in zip(*(getattr(rec, name) for rec in records))]

    rec = Record(num_steps=first.num_steps, counts_only=first.counts_only)
    rec.spike_totals = [sum(layer[1:], layer[0]) for layer in zip(*(r.spike_totals for r in records))]
    if not first.counts_only:
        rec.spike_counts, rec.input_counts, rec.pool_counts = (joined("spike_counts", 0), joined("input_counts", 0),
                                                               joined("pool_counts", 0))
        rec.current_norms = joined("current_norms", 1)
        rec.output_currents = torch.cat([r.output_currents for r in records], 1)  # type: ignore[misc]
    return torch.cat(predictions), rec


def build_snn(dataset: str, tau_m: float, **kwargs) -> SNN:
    """The network of :data:`ARCHITECTURES` for ``dataset`` with the given ``tau_m``."""
    if dataset not in ARCHITECTURES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(ARCHITECTURES)}")
    return SNN(ARCHITECTURES[dataset], tau_m, **kwargs)
