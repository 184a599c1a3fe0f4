"""Write tiny CIFAR-10 and SVHN stand-ins in the true on-disk formats (for tests; nothing is fetched).

Layouts follow :mod:`leaklib.data`: ``<root>/cifar-10-batches-py/...`` and ``<root>/svhn/*.mat``.
Each writer returns what a correct loader must read back: uint8 images ``[N, 3, 32, 32]`` (CHW) and
int64 labels in ``0..9``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def _write_cifar_batch(path: Path, images_chw: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    # The python version stores each image as a row of 3072 bytes: the 1024 red values row-major,
    # then green, then blue.
    n = images_chw.shape[0]
    entry = {
        "batch_label": batch_label,
        "labels": [int(v) for v in labels],
        "data": images_chw.reshape(n, 3 * 32 * 32).astype(np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10(
    root: str | Path, n_per_batch: int = 4, n_test: int = 5, seed: int = 0, skip: tuple[str, ...] = ()
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` under ``root``.

    Files named in ``skip`` are not written (to make an incomplete root). Returns
    ``{"train": (images, labels), "test": (images, labels)}``, train in batch order.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(n_per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=n_per_batch).astype(np.int64)
        if f"data_batch_{b}" not in skip:
            _write_cifar_batch(folder / f"data_batch_{b}", x, y, f"training batch {b} of 5")
        train_x.append(x)
        train_y.append(y)
    test_x = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, 10, size=n_test).astype(np.int64)
    if "test_batch" not in skip:
        _write_cifar_batch(folder / "test_batch", test_x, test_y, "testing batch 1 of 1")
    if "batches.meta" not in skip:
        meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_LABEL_NAMES, "num_vis": 3072}
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=2)
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (test_x, test_y)}


def write_svhn(
    root: str | Path, split: str = "train", n: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``<root>/svhn/{split}_32x32.mat`` as the Stanford files are laid out.

    ``X`` is uint8 ``[32, 32, 3, n]`` (height, width, channel, sample) and ``y`` is ``[n, 1]`` with
    the digit 0 stored as label 10. The labels cycle through all ten digits so that 0 appears.
    Returns images ``[n, 3, 32, 32]`` and labels with 0 for the digit 0.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    digits = (np.arange(n) % 10).astype(np.int64)
    x = np.transpose(images, (2, 3, 1, 0)).copy()  # [H, W, C, N]
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return images, digits
