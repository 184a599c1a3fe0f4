"""Numbers the paper reports (Table 1, Sec. 4.3), kept apart from anything this package measures.

They are printed beside our measurements, never used to compute a result.
"""

from __future__ import annotations

import math

__all__ = ["PAPER_TABLE1", "PAPER_CRITICAL_FREQUENCY", "TABLE1_ROWS", "LEE2020_PROTOCOL", "PAPER_PROTOCOL"]

#: Table 1 of the paper: {dataset: {tau_m: {row: value}}}.
PAPER_TABLE1: dict[str, dict[float, dict[str, float]]] = {
    "cifar10": {
        30.0: {"accuracy": 89.65, "test_sse": 2.93, "train_sse": 1.88, "spikes": 9.45, "synaptic_ops": 1.59e9},
        100.0: {"accuracy": 90.19, "test_sse": 3.45, "train_sse": 1.92, "spikes": 5.26, "synaptic_ops": 7.92e8},
        math.inf: {"accuracy": 90.3, "test_sse": 3.83, "train_sse": 2.2, "spikes": 4.94, "synaptic_ops": 7.18e8},
    },
    "svhn": {
        30.0: {"accuracy": 96.12, "test_sse": 0.72, "train_sse": 1.26, "spikes": 14.07, "synaptic_ops": 3.99e9},
        100.0: {"accuracy": 96.32, "test_sse": 0.75, "train_sse": 1.4, "spikes": 12.09, "synaptic_ops": 3.88e9},
        math.inf: {"accuracy": 96.32, "test_sse": 0.82, "train_sse": 1.6, "spikes": 11.85, "synaptic_ops": 3.79e9},
    },
}

#: Row names of Table 1 in the paper's order, with their labels.
TABLE1_ROWS: dict[str, str] = {
    "accuracy": "Accuracy (%)",
    "test_sse": "SSE_Test",
    "train_sse": "SSE_Train",
    "spikes": "Spikes (%)",
    "synaptic_ops": "#Synaptic Ops",
}

#: Sec. 4.3: mean normalised critical frequency of the target output neuron (70% of the power),
#: clean test inputs and noisy ones (severity 5); the paper does not say which dataset.
PAPER_CRITICAL_FREQUENCY: dict[str, dict[float, float]] = {
    "clean": {math.inf: 0.345, 100.0: 0.317, 30.0: 0.255},
    "noisy": {math.inf: 0.35, 100.0: 0.33, 30.0: 0.298},
}

#: The training protocol of [21] (Lee et al. 2020), read from its public VGG9 code
#: (src/cifar10_VGG9.py of chan8972/Enabling_Spikebased_Backpropagation at commit 802ef7d, March 2020;
#: its first version differs only in the correction's floor: LF > 0 there), for display beside ours.
LEE2020_PROTOCOL: dict[str, str] = {
    "leak gradient": "detached: l*mem.detach() + mem - mem.detach() (gradient 1 through time)",
    "Eq. 5 epsilon": "per-neuron factor (LF > 1e-3) + ln(l)*LF/Total on the spike gradient (hooks; LF > 0 before 802ef7d)",
    "surrogate": "1/threshold where the neuron fired (threshold 1); reset: gradient 0 through a spike",
    "pooling": "2x2 average, then non-leaky spiking neurons, threshold 0.75, gradient 1",
    "output layer": "mem + fc(out), then decayed (detached); prediction mem/threshold/T",
    "initialisation": "N(0, 2/fan_in) (He), conv and linear, no biases",
    "optimiser": "SGD without momentum (the momentum option is never passed), weight decay 5e-4 on the summed loss",
    "learning rate": "0.0033 at batch 16, MSE summed over batch and classes (no 1/2)",
    "schedule": "150 epochs; lr x0.2 at epochs 70, 100 and 125",
    "dropout": "p = 0.2 after every conv and FC spiking layer, one mask per sample for all steps; none at test",
    "inputs": "per-channel normalisation, signed Poisson spikes, T = 100 (leak l = 0.99 in the file)",
    "augmentation": "CIFAR-10: random crop (padding 4) and horizontal flip",
}

#: What the paper itself states about training (Sec. 4.1).
PAPER_PROTOCOL: dict[str, str] = {
    "schedule": "150 epochs, batch 64, learning rate decreased at epochs 70 and 100",
    "inputs": "each image normalised to zero mean and scaled to [-1, 1]; Poisson spike trains, T = 100",
    "seeds": "three independently trained networks per tau_m",
    "protocol": "\"We follow the training protocols as described in [21]\"",
}
