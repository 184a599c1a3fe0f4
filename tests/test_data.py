"""Tests of leaklib.data: loaders on tiny on-disk stand-ins, augmentation, subsets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fixtures_data import write_cifar10, write_svhn
from leaklib.data import (
    DatasetNotFoundError,
    ImageDataset,
    augment_batch,
    default_data_root,
    load_dataset,
    stratified_subset,
)

# ---------------------------------------------------------------------------------------------
# digits


def _class_counts(labels: torch.Tensor) -> np.ndarray:
    return np.bincount(labels.numpy(), minlength=10)


def load_digits_pair() -> tuple[ImageDataset, ImageDataset]:
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_digits_sizes_dtypes_and_range() -> None:
    train, test = load_digits_pair()
    assert (len(train), len(test)) == (1437, 360)
    for ds in (train, test):
        assert ds.images.shape[1:] == (1, 8, 8)
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert ds.name == "digits" and ds.num_classes == 10
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
        # raw values 0..16 divided by 16: sixteen times a pixel is an integer
        scaled = ds.images * 16
        assert torch.equal(scaled, scaled.round())


def test_digits_split_is_stratified_partition_of_sklearn_digits() -> None:
    train, test = load_digits_pair()
    full = load_digits()
    full_counts = np.bincount(full.target, minlength=10)
    # each class is split 80/20 to within one sample
    assert np.all(np.abs(_class_counts(test.labels) - 0.2 * full_counts) < 1)
    assert np.array_equal(_class_counts(train.labels) + _class_counts(test.labels), full_counts)
    # together the two splits are exactly sklearn's images (as a multiset of (image, label) rows)
    ours = np.concatenate(
        [
            np.concatenate([d.images.reshape(len(d), -1).numpy() * 16, d.labels.numpy()[:, None]], 1)
            for d in (train, test)
        ]
    )
    theirs = np.concatenate([full.data, full.target[:, None]], 1).astype(np.float32)
    assert ours.shape == theirs.shape == (1797, 65)
    assert np.array_equal(
        ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])]
    )


def test_digits_split_is_fixed() -> None:
    a = load_dataset("digits", "test")
    b = load_dataset("DIGITS", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_bad_name_or_split_raises_value_error_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match="cifar10.*svhn"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="train.*test"):
        load_dataset("digits", "valid")


# ---------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_fixture_round_trips_pixels_and_labels(tmp_path: Path, split: str) -> None:
    expected = write_cifar10(tmp_path, n_per_batch=3, n_test=4)[split]
    ds = load_dataset("cifar10", split, root=tmp_path, verify_checksums=False)
    x, y = expected
    assert ds.images.shape == (len(y), 3, 32, 32) and ds.images.dtype == torch.float32
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert torch.equal(ds.labels, torch.from_numpy(y))
    # exact pixels, channel-first, scaled by 1/255
    assert torch.equal(torch.round(ds.images * 255).to(torch.uint8), torch.from_numpy(x))


def test_cifar10_channel_layout_of_a_known_pixel(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_per_batch=1, n_test=1)
    folder = tmp_path / "cifar-10-batches-py"
    import pickle

    with open(folder / "test_batch", "rb") as f:
        entry = pickle.load(f)
    row = np.zeros(3072, dtype=np.uint8)
    # red plane first, then green, then blue; pixel (row 2, column 5)
    row[2 * 32 + 5] = 10
    row[1024 + 2 * 32 + 5] = 20
    row[2048 + 2 * 32 + 5] = 30
    entry["data"] = row[None, :]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    ds = load_dataset("cifar10", "test", root=tmp_path, verify_checksums=False)
    assert torch.allclose(ds.images[0, :, 2, 5], torch.tensor([10.0, 20.0, 30.0]) / 255)
    assert float(ds.images.sum()) == pytest.approx(60 / 255)


def test_cifar10_missing_root_raises_one_line_error(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "train", root=root)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg and str(root) in msg and "download" in msg and "CIFAR-10" in msg


def test_cifar10_incomplete_root_names_missing_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path, skip=("data_batch_3",))
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=tmp_path, verify_checksums=False)


def test_cifar10_checksums_are_verified_by_default(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="checksum") as info:
        load_dataset("cifar10", "test", root=tmp_path)
    assert "\n" not in str(info.value)


def test_data_root_defaults_to_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_cifar10(tmp_path, n_per_batch=1, n_test=2)["test"]
    monkeypatch.setenv("LEAKLIB_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    ds = load_dataset("cifar10", "test", verify_checksums=False)
    assert torch.equal(ds.labels, torch.from_numpy(expected[1]))
    monkeypatch.delenv("LEAKLIB_DATA_ROOT")
    assert default_data_root() == Path(os.path.expanduser("~/.cache/leaklib/data"))


# ---------------------------------------------------------------------------------------------
# SVHN


@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_fixture_round_trips_pixels_and_maps_label_10_to_0(tmp_path: Path, split: str) -> None:
    x, y = write_svhn(tmp_path, split=split, n=12)
    ds = load_dataset("svhn", split, root=tmp_path, verify_checksums=False)
    assert ds.images.shape == (12, 3, 32, 32) and ds.name == "svhn" and ds.num_classes == 10
    assert torch.equal(ds.labels, torch.from_numpy(y))
    assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
    assert torch.equal(torch.round(ds.images * 255).to(torch.uint8), torch.from_numpy(x))


def test_svhn_known_pixel_layout(tmp_path: Path) -> None:
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    X = np.zeros((32, 32, 3, 2), dtype=np.uint8)  # [H, W, C, N]
    X[4, 7, :, 1] = [50, 60, 70]  # image 1, row 4, column 7
    savemat(folder / "test_32x32.mat", {"X": X, "y": np.array([[10], [3]], dtype=np.uint8)})
    ds = load_dataset("svhn", "test", root=tmp_path, verify_checksums=False)
    assert ds.labels.tolist() == [0, 3]
    assert torch.allclose(ds.images[1, :, 4, 7], torch.tensor([50.0, 60.0, 70.0]) / 255)
    assert float(ds.images.sum()) == pytest.approx(180 / 255)


def test_svhn_missing_split_raises_one_line_error(tmp_path: Path) -> None:
    write_svhn(tmp_path, split="train")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", "test", root=tmp_path, verify_checksums=False)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path) in msg and "download" in msg and "test_32x32.mat" in msg


def test_svhn_checksums_are_verified_by_default(tmp_path: Path) -> None:
    write_svhn(tmp_path, split="test")
    with pytest.raises(DatasetNotFoundError, match="checksum"):
        load_dataset("svhn", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# ImageDataset


def test_subset_picks_rows_in_order() -> None:
    ds = ImageDataset(torch.arange(5.0).reshape(5, 1, 1, 1), torch.tensor([0, 1, 2, 0, 1]), "toy", 3)
    sub = ds.subset([3, 0])
    assert len(sub) == 2 and sub.images.flatten().tolist() == [3.0, 0.0]
    assert sub.labels.tolist() == [0, 0] and sub.name == "toy" and sub.num_classes == 3
    assert len(ds.subset([])) == 0
    with pytest.raises(TypeError):
        ds.subset(torch.tensor([True, False, True, False, True]))


def test_image_dataset_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.long), "x", 2)
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long), "x", 2)


# ---------------------------------------------------------------------------------------------
# augment_batch


def _images(n: int = 64, c: int = 3, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_augment_same_seed_same_output_and_generator_is_the_only_randomness() -> None:
    x = _images()
    a = augment_batch(x, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG must not matter
    b = augment_batch(x, torch.Generator().manual_seed(7))
    c = augment_batch(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_identity_without_pad_and_flip() -> None:
    x = _images()
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)


def test_augment_flip_only_gives_input_or_torch_flip_both_occurring() -> None:
    x = _images(n=200)
    out = augment_batch(x, torch.Generator().manual_seed(1), pad=0, flip=True)
    same = (out == x).flatten(1).all(1)
    flipped = (out == torch.flip(x, dims=[-1])).flatten(1).all(1)
    assert torch.all(same | flipped)
    assert 60 < int(flipped.sum()) < 140  # about half, Binomial(200, 1/2)


def test_augment_each_output_is_a_zero_padded_window_and_all_windows_occur() -> None:
    pad = 1
    x = _images(n=400, c=2, h=4, w=5) + 0.5  # no zeros inside, so padding is recognisable
    out = augment_batch(x, torch.Generator().manual_seed(3), pad=pad, flip=True)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    seen = set()

    def window(i: int, dy: int, dx: int, flipped: bool) -> torch.Tensor:
        win = padded[i, :, dy : dy + 4, dx : dx + 5]
        return torch.flip(win, dims=[-1]) if flipped else win

    for i in range(len(x)):
        matches = [
            (dy, dx, f)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for f in (False, True)
            if torch.equal(out[i], window(i, dy, dx, f))
        ]
        assert len(matches) == 1, f"image {i} is not a unique window of its padded input"
        seen.add(matches[0])
    assert len(seen) == (2 * pad + 1) ** 2 * 2


def test_augment_checks_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(3, 4, 4), g)
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(1, 1, 4, 4), g, pad=-1)


# ---------------------------------------------------------------------------------------------
# stratified_subset


def test_stratified_subset_keeps_proportions_and_rows() -> None:
    train = load_dataset("digits", "train")
    sub = stratified_subset(train, 100, seed=0)
    counts, full = _class_counts(sub.labels), _class_counts(train.labels)
    assert counts.sum() == 100
    assert np.all(np.abs(counts - 100 * full / len(train)) < 1)
    # every picked row is a row of the original with its own label, none twice
    flat = train.images.flatten(1)
    rows = [int(torch.nonzero((flat == r).all(1))[0]) for r in sub.images.flatten(1)]
    assert len(set(rows)) == 100
    assert torch.equal(train.labels[rows], sub.labels)


def test_stratified_subset_uneven_classes_and_seeds() -> None:
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    ds = ImageDataset(torch.arange(100.0).reshape(100, 1, 1, 1), labels, "toy", 3)
    sub = stratified_subset(ds, 10, seed=1)
    assert sub.labels.bincount().tolist() == [7, 2, 1]
    # largest remainder: 15 * (0.7, 0.2, 0.1) = (10.5, 3, 1.5) -> ties to the lower class
    assert stratified_subset(ds, 15).labels.bincount().tolist() == [11, 3, 1]
    again = stratified_subset(ds, 10, seed=1)
    other = stratified_subset(ds, 10, seed=2)
    assert torch.equal(sub.images, again.images) and not torch.equal(sub.images, other.images)
    assert torch.equal(stratified_subset(ds, 100).images, ds.images)
    with pytest.raises(ValueError):
        stratified_subset(ds, 101)
    with pytest.raises(ValueError):
        stratified_subset(ds, 0)


def test_standins_with_their_marker_load_through_torchvision_with_a_warning(tmp_path):
    from leaklib.data import STANDIN_MARKER, write_standins

    root = write_standins(tmp_path / "standins", n_train=10, n_test=4)
    assert (root / STANDIN_MARKER).is_file()
    with pytest.warns(UserWarning, match="stand-in"):
        train = load_dataset("cifar10", "train", root=root)
    assert train.images.shape == (10, 3, 32, 32) and len(load_dataset("svhn", "test", root=root)) == 4
    # without the marker the md5 comparison runs, and the random files fail it
    (root / STANDIN_MARKER).unlink()
    with pytest.raises(DatasetNotFoundError, match="md5"):
        load_dataset("svhn", "train", root=root)
    with pytest.raises(ValueError, match="multiple of 5"):
        write_standins(tmp_path / "bad", n_train=7)


def test_cli_writes_standins(tmp_path, capsys):
    from leaklib import cli
    from leaklib.data import STANDIN_MARKER

    assert cli.main(["standins", str(tmp_path / "s"), "--train", "15", "--test", "3"]) == 0
    assert (tmp_path / "s" / STANDIN_MARKER).is_file() and "LEAKLIB_DATA_ROOT" in capsys.readouterr().out
