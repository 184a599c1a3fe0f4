"""VGG-style SNNs built from the paper's spec strings (Sec. 4.1) and run as in Algorithm 2.

Spec tokens: ``32x32x3`` input (H x W x C), ``64C3`` 3x3 convolution with 64 output channels
(padding 1, no bias), ``2P`` 2x2 average pooling, ``1024FC`` fully connected, ``10o`` the output
layer. The paper writes ``2s`` before the last FC layer of both nets; we read it as ``2P``.

A network is a chain of *blocks*. A block is the linear map between two layers of neurons
(optional average pooling, optional flattening, then a convolution or FC layer) followed by
IF/LIF neurons, or, for the last block, by the non-spiking output integrator
``u_L[t] = beta u_L[t-1] + W_L O_{L-1}[t]`` whose final value gives the prediction ``u_L[T]/T``.

Multi-step execution (default): each block runs its linear map once over the ``[T*B, ...]``
batch, then the neurons scan over ``T``. ``method="stepwise"`` runs Algorithm 2 literally, one
time step through all layers at a time; both give the same spikes and gradients.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .neurons import LIFNeuron, decay_factor, leaky_integrate

__all__ = [
    "ARCHITECTURES",
    "INIT_GAIN",
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

#: Weights are drawn from N(0, INIT_GAIN**2 / fan_in). A layer firing at rate r drives the next with
#: currents of standard deviation INIT_GAIN * sqrt(r) per step against a threshold of 1: Lee et al.'s
#: gain 1 lets the rate fall with depth until the deep layers of the plain VGG nets of Sec. 4.1 are
#: silent (CIFAR-10 net at T=25: 15, 8, 2, 0.6 % then 0 % in the last four layers), while 2.5 keeps
#: every layer of the digits and CIFAR-10 nets at roughly 15-25 % for IF and LIF alike from the first
#: batch (Lee et al.'s own nets have residual shortcuts that carry activity past this decay). The
#: shallow digits net spikes in every layer at gain 1 (11, 4, 1.6 % at T=25) and learns better from it:
#: its profiles keep Lee et al.'s gain 1 (at 2.5 one IF seed of the quick sweep ended at 66 %).
INIT_GAIN = 2.5

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
    """Linear map between two neuron layers: ``[avg-pool] -> [flatten] -> conv | linear``."""

    def __init__(self, in_shape: tuple[int, ...], pool: int, layer: LayerSpec, init_gain: float = 1.0) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.pool = pool
        shape = in_shape
        if pool > 1:
            if len(shape) != 3 or shape[1] % pool or shape[2] % pool:
                raise ValueError(f"cannot {pool}x{pool}-pool a map of shape {shape}")
            shape = (shape[0], shape[1] // pool, shape[2] // pool)
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
        with torch.no_grad():  # Lee et al. 2020's N(0, 1/fan_in) times init_gain**2 (see INIT_GAIN), no biases
            weight.normal_(0.0, init_gain / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a batch ``[N, *in_shape]`` (N = T*B in multi-step mode)."""
        if self.pool == 2 and not x.is_cuda:
            x = _AvgPool2x2.apply(x)
        elif self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        if self.flatten:
            x = x.flatten(1)
        return self.linear(x)

    @torch.no_grad()
    def synapse_map(self, x: torch.Tensor) -> torch.Tensor:
        """The same map with every weight set to 1 and pooling as a sum (counts synapses driven by ``x``)."""
        if self.pool > 1:
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
    input spikes). ``current_norms[l]``: L2 norm over neurons of ``W_l O_{l-1}[t]`` of hidden layer l,
    ``[T, B]``. ``output_currents``: ``W_L O_{L-1}[t]``, ``[T, B, classes]``.
    """

    num_steps: int
    spike_counts: list[torch.Tensor] = field(default_factory=list)
    input_counts: list[torch.Tensor] = field(default_factory=list)
    current_norms: list[torch.Tensor] = field(default_factory=list)
    output_currents: torch.Tensor | None = None


class SNN(nn.Module):
    """A spiking VGG-style network (Sec. 4.1) with IF/LIF hidden neurons and a leaky output integrator."""

    def __init__(self, spec: str, tau_m: float, v_th: float = 1.0, eps: float = 0.0, dropout: float = 0.0,
                 method: Literal["fused", "stepwise"] = "fused", init_gain: float = INIT_GAIN) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        decay_factor(tau_m)  # validates tau_m
        self.spec, self.tau_m, self.v_th, self.eps, self.dropout = spec, float(tau_m), float(v_th), float(eps), dropout
        self.method = method
        self.input_shape, layers = parse_spec(spec)
        blocks, neurons = [], []
        shape: tuple[int, ...] = self.input_shape
        pool = 1
        for layer in layers:
            if layer.kind == "pool":
                pool *= layer.size
                continue
            block = Block(shape, pool, layer, init_gain)
            blocks.append(block)
            shape, pool = block.out_shape, 1
            if layer.kind != "output":
                neurons.append(LIFNeuron(tau_m, v_th, eps, method=method))
        self.blocks = nn.ModuleList(blocks)
        self.neurons = nn.ModuleList(neurons)
        self.num_classes = layers[-1].size

    @property
    def hidden_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each hidden layer of neurons (one entry per LIF/IF layer)."""
        return [block.out_shape for block in self.blocks[:-1]]

    def _dropout_masks(self, batch: int, device: torch.device, dtype: torch.dtype,
                       generator: torch.Generator | None) -> list[torch.Tensor | None]:
        """One mask per hidden layer and sample, shared by all time steps (Lee et al. 2020)."""
        if not (self.training and self.dropout > 0):
            return [None] * len(self.neurons)
        keep = 1.0 - self.dropout
        return [(torch.rand((batch,) + shape, generator=generator, device=device) < keep).to(dtype) / keep
                for shape in self.hidden_shapes]

    def forward(self, spikes: torch.Tensor, generator: torch.Generator | None = None,
                record: bool = False) -> torch.Tensor | tuple[torch.Tensor, Record]:
        """Prediction ``u_L[T]/T`` ``[B, classes]`` from input spikes ``[T, B, C, H, W]``; with a :class:`Record`."""
        if spikes.dim() != 5 or tuple(spikes.shape[2:]) != self.input_shape:
            raise ValueError(f"expected input spikes [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(spikes.shape)}")
        num_steps, batch = spikes.shape[:2]
        masks = self._dropout_masks(batch, spikes.device, spikes.dtype, generator)
        if self.method == "stepwise":
            if record:
                raise ValueError("record=True needs the multi-step method")
            return self._forward_stepwise(spikes, masks)
        rec = Record(num_steps=num_steps) if record else None
        x = spikes
        for index, block in enumerate(self.blocks):
            if rec is not None:
                rec.input_counts.append(x.detach().abs().sum(0))
            currents = block(x.flatten(0, 1)).unflatten(0, (num_steps, batch))
            if index == len(self.neurons):
                if rec is not None:
                    rec.output_currents = currents.detach()
                return self._readout(currents, rec)
            if rec is not None:
                rec.current_norms.append(currents.detach().flatten(2).norm(dim=2))
            x = self.neurons[index](currents)
            if rec is not None:
                rec.spike_counts.append(x.detach().sum(0))
            if masks[index] is not None:
                x = x * masks[index]
        raise AssertionError("unreachable: the last block is the output layer")

    def _readout(self, currents: torch.Tensor, rec: Record | None) -> torch.Tensor | tuple[torch.Tensor, Record]:
        prediction = leaky_integrate(currents, self.tau_m) / currents.shape[0]
        return prediction if rec is None else (prediction, rec)

    def _forward_stepwise(self, spikes: torch.Tensor, masks: list[torch.Tensor | None]) -> torch.Tensor:
        """Algorithm 2 literally: every layer advances one time step at a time."""
        beta = decay_factor(self.tau_m)
        for neuron in self.neurons:
            neuron.reset()
        u_out = None
        for t in range(spikes.shape[0]):
            x = spikes[t]
            for index, neuron in enumerate(self.neurons):
                x = neuron.step(self.blocks[index](x))
                if masks[index] is not None:
                    x = x * masks[index]
            current = self.blocks[-1](x)
            u_out = current if u_out is None else beta * u_out + current
        for neuron in self.neurons:
            neuron.reset()
        assert u_out is not None
        return u_out / spikes.shape[0]


def build_snn(dataset: str, tau_m: float, **kwargs) -> SNN:
    """The network of :data:`ARCHITECTURES` for ``dataset`` with the given ``tau_m``."""
    if dataset not in ARCHITECTURES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(ARCHITECTURES)}")
    return SNN(ARCHITECTURES[dataset], tau_m, **kwargs)
