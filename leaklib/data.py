"""Image datasets for the leak experiments: digits (offline), CIFAR-10 and SVHN.

Every loader returns an :class:`ImageDataset` holding float32 images in ``[N, C, H, W]`` with the
raw pixel values scaled to ``[0, 1]`` and int64 labels. Per-image normalisation (zero mean, range
``[-1, 1]``, Algorithm 1 of the paper) is done by :mod:`leaklib.encoding`, not here.

CIFAR-10 and SVHN are read through torchvision's own dataset classes from a data root
(``root`` argument, else the environment variable ``LEAKLIB_DATA_ROOT``, else
``~/.cache/leaklib/data``). The layout under the root is torchvision's:

* ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
* ``<root>/svhn/{train_32x32.mat, test_32x32.mat}``

Nothing is downloaded unless ``download=True`` is passed.

Stand-ins. :func:`write_standins` writes tiny files in the true on-disk formats (random images)
and a marker file, :data:`STANDIN_MARKER`; under a root holding that marker the md5 comparison is
skipped (with a warning naming the root) and torchvision's own loading code reads the files. The
paper-shaped dry run (``--profile paper-smoke``) runs the whole book on them where the real data
cannot be had.
"""

from __future__ import annotations

import functools
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DatasetNotFoundError",
    "ImageDataset",
    "augment_batch",
    "default_data_root",
    "load_dataset",
    "stratified_subset",
    "STANDIN_MARKER",
    "write_cifar10_standin",
    "write_svhn_standin",
    "write_standins",
]

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "svhn")
SPLITS: tuple[str, ...] = ("train", "test")

#: Fraction of scikit-learn's digits held out as the test split, and the seed of that split.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

SVHN_SUBDIR = "svhn"

_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
_DISPLAY = {"cifar10": "CIFAR-10", "svhn": "SVHN"}
_DOWNLOAD_SIZE = {
    ("cifar10", "train"): "about 170 MB",
    ("cifar10", "test"): "about 170 MB",
    ("svhn", "train"): "about 180 MB",
    ("svhn", "test"): "about 64 MB",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing, incomplete or corrupted under the data root."""


@dataclass
class ImageDataset:
    """Images in ``[0, 1]`` with integer labels.

    Attributes:
        images: float32 ``[N, C, H, W]``, raw pixel values scaled to ``[0, 1]``.
        labels: int64 ``[N]``, class indices in ``0 .. num_classes - 1``.
        name: dataset name, e.g. ``"digits"``.
        num_classes: number of classes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be [N] with N = {self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> "ImageDataset":
        """The samples at ``indices`` (in that order), as a new dataset."""
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        if idx.numel() == 0:
            idx = torch.zeros(0, dtype=torch.long)
        elif idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
            raise TypeError(f"indices must be integer positions, got dtype {idx.dtype}")
        idx = idx.long()
        if idx.ndim != 1:
            raise ValueError("indices must be one-dimensional")
        idx = idx.to(self.labels.device)
        return ImageDataset(self.images[idx], self.labels[idx], self.name, self.num_classes)


def default_data_root() -> Path:
    """``$LEAKLIB_DATA_ROOT`` if set, else ``~/.cache/leaklib/data``."""
    env = os.environ.get("LEAKLIB_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/leaklib/data").expanduser()


def load_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    *,
    verify_checksums: bool = True,
) -> ImageDataset:
    """Load split ``"train"`` or ``"test"`` of ``"digits"``, ``"cifar10"`` or ``"svhn"``.

    Args:
        name: dataset name, one of :data:`DATASET_NAMES`.
        split: ``"train"`` or ``"test"``.
        root: data root for CIFAR-10/SVHN (default :func:`default_data_root`); unused by digits.
        download: fetch missing CIFAR-10/SVHN files (checked against torchvision's md5 sums).
        verify_checksums: check the md5 sums of the files on disk (torchvision's check). Only
            tests of tiny stand-in files should turn this off; the files are still read by
            torchvision's own loading code.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetNotFoundError: CIFAR-10/SVHN files missing or corrupted under the root.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if key == "digits":
        return _load_digits(split)
    data_root = Path(root).expanduser() if root is not None else default_data_root()
    if verify_checksums and (data_root / STANDIN_MARKER).is_file():
        _warn_standins(data_root)
        verify_checksums = False
    if key == "cifar10":
        return _load_cifar10(split, data_root, download, verify_checksums)
    return _load_svhn(split, data_root, download, verify_checksums)


# ----------------------------------------------------------------------------------------------
# digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # values 0..16
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return x_tr, y_tr, x_te, y_te


def _load_digits(split: str) -> ImageDataset:
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    images = torch.from_numpy(x.copy()).unsqueeze(1)  # [N, 1, 8, 8]
    return ImageDataset(images, torch.from_numpy(y.copy()), "digits", 10)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 and SVHN via torchvision


@functools.cache
def _unverified_classes() -> tuple[type, type]:
    """Subclasses of torchvision's CIFAR10 and SVHN whose md5 sums are ``None``.

    torchvision's ``check_integrity(path, None)`` only checks that the file exists, so its own
    ``_check_integrity``, ``_load_meta`` and loading code run unchanged on stand-in files.
    """
    from torchvision.datasets import CIFAR10, SVHN

    class CIFAR10Unverified(CIFAR10):
        train_list = [[fname, None] for fname, _ in CIFAR10.train_list]
        test_list = [[fname, None] for fname, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    class SVHNUnverified(SVHN):
        split_list = {k: [url, fname, None] for k, (url, fname, _) in SVHN.split_list.items()}

    return CIFAR10Unverified, SVHNUnverified


def _not_found(key: str, split: str, where: Path, detail: str, root: Path) -> DatasetNotFoundError:
    cmd = f"leaklib train --dataset {key} --download --data-root {shlex.quote(str(root))}"
    msg = (
        f"{_DISPLAY[key]} {split} split {detail} under {where}: run `{cmd}` "
        f"or load_dataset({key!r}, {split!r}, root=..., download=True) ({_DOWNLOAD_SIZE[(key, split)]})"
    )
    return DatasetNotFoundError(" ".join(msg.split("\n")))


def _missing(folder: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not (folder / n).is_file()]


def _construct(key: str, split: str, root: Path, cls: type, kwargs: dict[str, Any]) -> Any:
    """Instantiate a torchvision dataset, turning its integrity or download failure into our error.

    A download that fails (offline, interrupted) leaves no partial file behind.
    """
    before = _listing(root) if kwargs.get("download") else None
    try:
        return cls(**kwargs)
    except RuntimeError as err:
        if "not found or corrupted" not in str(err):
            raise
        where = root / SVHN_SUBDIR if key == "svhn" else root / "cifar-10-batches-py"
        raise _not_found(key, split, where, "is corrupted (md5 checksum mismatch)", root) from None
    except (OSError, KeyboardInterrupt) as err:
        if before is None:
            raise
        _remove_new_files(root, before)
        if isinstance(err, KeyboardInterrupt) or (isinstance(err, FileNotFoundError) and err.filename):
            raise
        reason = getattr(err, "reason", None) or err.strerror or err
        raise DatasetNotFoundError(
            f"{_DISPLAY[key]} {split} split could not be downloaded ({' '.join(str(reason).split())}); check the "
            f"network connection, or copy the files into {root} (see `leaklib train --help`)") from None


def _listing(root: Path) -> set[Path]:
    """Files under ``root`` (two levels: the archive and the svhn/ subfolder), to undo a failed download."""
    if not root.is_dir():
        return set()
    return {p for p in root.glob("*") if p.is_file()} | {p for p in root.glob("*/*") if p.is_file()}


def _remove_new_files(root: Path, before: set[Path]) -> None:
    for path in _listing(root) - before:
        try:
            path.unlink()
        except OSError:
            pass


def _load_cifar10(split: str, root: Path, download: bool, verify: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    kwargs = {"root": str(root), "train": split == "train"}
    cls = CIFAR10 if verify else _unverified_classes()[0]
    ds = None
    if download:
        ds = _construct("cifar10", split, root, CIFAR10, {**kwargs, "download": True})
    else:
        missing = _missing(folder, _CIFAR10_FILES)
        if missing:
            if len(missing) == len(_CIFAR10_FILES):
                detail = "not found"
            else:
                detail = f"incomplete (missing {', '.join(missing)})"
            raise _not_found("cifar10", split, folder, detail, root)
    if ds is None or not verify:
        ds = _construct("cifar10", split, root, cls, kwargs)
    data = torch.from_numpy(np.ascontiguousarray(ds.data))  # uint8 [N, H, W, C]
    images = data.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)
    labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    return ImageDataset(images, labels, "cifar10", 10)


def _load_svhn(split: str, root: Path, download: bool, verify: bool) -> ImageDataset:
    from torchvision.datasets import SVHN

    folder = root / SVHN_SUBDIR
    kwargs = {"root": str(folder), "split": split}
    cls = SVHN if verify else _unverified_classes()[1]
    ds = None
    if download:
        ds = _construct("svhn", split, root, SVHN, {**kwargs, "download": True})
    else:
        missing = _missing(folder, [_SVHN_FILES[split]])
        if missing:
            raise _not_found("svhn", split, folder, f"not found (missing {missing[0]})", root)
    if ds is None or not verify:
        ds = _construct("svhn", split, root, cls, kwargs)
    data = torch.from_numpy(np.ascontiguousarray(ds.data))  # uint8 [N, C, H, W]
    images = data.to(torch.float32).div_(255.0)
    labels = torch.as_tensor(np.asarray(ds.labels, dtype=np.int64))
    return ImageDataset(images, labels, "svhn", 10)


# ----------------------------------------------------------------------------------------------
# stand-in files in the true formats (tests, and the paper-shaped dry run)

#: The file that marks a data root as holding stand-ins (random images, not CIFAR-10/SVHN).
STANDIN_MARKER = "LEAKLIB_STANDINS.txt"

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@functools.cache
def _warn_standins(root: Path) -> None:
    import warnings

    warnings.warn(f"{root} holds stand-in files (random images in the CIFAR-10/SVHN formats, marked by "
                  f"{STANDIN_MARKER}), not the real datasets: md5 sums are not checked", stacklevel=3)


def _write_cifar_batch(path: Path, images_chw: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    import pickle

    # The python version stores each image as a row of 3072 bytes: the 1024 red values row-major,
    # then green, then blue.
    n = images_chw.shape[0]
    entry = {"batch_label": batch_label, "labels": [int(v) for v in labels],
             "data": images_chw.reshape(n, 3 * 32 * 32).astype(np.uint8),
             "filenames": [f"img_{i}.png" for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10_standin(root: str | Path, n_per_batch: int = 4, n_test: int = 5, seed: int = 0,
                          skip: tuple[str, ...] = ()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write CIFAR-10's ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` (random images) under ``root``.

    Files named in ``skip`` are not written (to make an incomplete root). Returns what a correct
    loader must read back: ``{"train": (images, labels), "test": (images, labels)}``, uint8 images
    ``[N, 3, 32, 32]`` (CHW), train in batch order.
    """
    import pickle

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


def write_svhn_standin(root: str | Path, split: str = "train", n: int = 12, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Write ``<root>/svhn/{split}_32x32.mat`` (random images) as the Stanford files are laid out.

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
    folder = Path(root) / SVHN_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return images, digits


def write_standins(root: str | Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 and SVHN stand-ins under ``root`` (``n_train``/``n_test`` images each) and the marker; returns ``root``."""
    if n_train < 5 or n_train % 5 or n_test < 1:
        raise ValueError(f"n_train must be a positive multiple of 5 (CIFAR-10 has 5 train batches), n_test >= 1; "
                         f"got {n_train}, {n_test}")
    root = Path(root)
    write_cifar10_standin(root, n_per_batch=n_train // 5, n_test=n_test, seed=seed)
    write_svhn_standin(root, "train", n=n_train, seed=seed + 1)
    write_svhn_standin(root, "test", n=n_test, seed=seed + 2)
    (root / STANDIN_MARKER).write_text(
        "Stand-in files written by leaklib.data.write_standins: random images in the true CIFAR-10 and SVHN\n"
        "on-disk formats, for the paper-shaped dry run. Not the real datasets; md5 sums are not checked here.\n")
    return root


# ----------------------------------------------------------------------------------------------
# augmentation and subsets


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and random horizontal flip, independently per image.

    All randomness comes from ``generator``, which must live on the same device as ``images``:
    first the vertical then the horizontal crop offsets (``randint(0, 2*pad+1)`` each), then, if
    ``flip``, one ``rand < 0.5`` per image. Done as one gather, without a loop over images.

    Args:
        images: ``[N, C, H, W]``.
        generator: source of randomness (a CUDA generator for CUDA images).
        pad: zero padding on each side before cropping back to ``H x W``; 0 disables cropping.
        flip: flip each image left-right with probability 1/2.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if generator.device.type != images.device.type:
        raise ValueError(f"generator is on {generator.device}, images on {images.device}")
    n, c, h, w = images.shape
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # [N, H] rows of the padded image
    cols = dx[:, None] + torch.arange(w, device=dev)  # [N, W]
    if flip:
        flipped = torch.rand(n, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    padded = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images
    batch_idx = torch.arange(n, device=dev)[:, None, None, None]
    chan_idx = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def stratified_subset(ds: ImageDataset, n: int, seed: int = 0) -> ImageDataset:
    """``n`` samples of ``ds`` drawn without replacement, keeping the class proportions.

    Each class gets ``floor(n * share)`` samples, and the leftover samples go to the classes with
    the largest remainders (ties to the lower class index). The samples within each class are
    chosen at random with ``seed``; the result keeps the original order.
    """
    total = len(ds)
    if not 0 < n <= total:
        raise ValueError(f"n must be in 1..{total}, got {n}")
    labels = ds.labels.cpu()
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    leftover = n - int(quota.sum())
    if leftover > 0:
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quota[i]).item(), i))
        for i in order[:leftover]:
            quota[i] += 1
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for cls, k in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).squeeze(1)
        perm = torch.randperm(len(members), generator=gen)
        chosen.append(members[perm[:k]])
    idx = torch.cat(chosen).sort().values
    return ds.subset(idx)
