"""Numbers the paper reports (Table 1, Sec. 4.3), kept apart from anything this package measures.

They are printed beside our measurements, never used to compute a result.
"""

from __future__ import annotations

import math

__all__ = ["PAPER_TABLE1", "PAPER_CRITICAL_FREQUENCY", "TABLE1_ROWS"]

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
