"""Which datasets exist, where their files live, and the per-process cache of decoded arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .formats import DatasetError, read_cifar_batch, read_idx_pair, read_svhn_mat


class RawData(NamedTuple):
    """Decoded, read-only arrays of one dataset: images uint8 [N, C, H, W], labels int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset and of how to obtain its files."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    default_root: str | None
    files: tuple[str, ...]  # expected file names, relative to the data folder
    how_to_get: str
    augment: bool  # crop+flip by default
    mean: tuple[float, ...]  # per-channel training-set statistics, for the model's Normalize
    std: tuple[float, ...]
    read: Callable[[dict[str, Path]], RawData]  # {expected file name: path} -> arrays
    sizes: tuple[int, int]  # (training, test) images in the standard files: config sizes are checked before loading
    subdirs: tuple[str, ...] = ()  # folders under root also searched (root may be their parent)
    gzip_ok: bool = False  # each file may also exist as FILE.gz


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_reader(num_classes: int) -> Callable[[dict[str, Path]], RawData]:
    def read(paths: dict[str, Path]) -> RawData:
        train = read_idx_pair(paths[_IDX_FILES[0]], paths[_IDX_FILES[1]], num_classes)
        test = read_idx_pair(paths[_IDX_FILES[2]], paths[_IDX_FILES[3]], num_classes)
        return RawData(*train, *test)

    return read


def _cifar_reader(
    train_files: tuple[str, ...], test_file: str, label_key: str, num_classes: int
) -> Callable[[dict[str, Path]], RawData]:
    def read(paths: dict[str, Path]) -> RawData:
        parts = [read_cifar_batch(paths[f], label_key, num_classes) for f in train_files]
        train_x = np.concatenate([x for x, _ in parts])
        train_y = np.concatenate([y for _, y in parts])
        test = read_cifar_batch(paths[test_file], label_key, num_classes)
        return RawData(train_x, train_y, *test)

    return read


def _read_svhn(paths: dict[str, Path]) -> RawData:
    train = read_svhn_mat(paths["train_32x32.mat"])
    return RawData(*train, *read_svhn_mat(paths["test_32x32.mat"]))


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="fashion_mnist",
            num_classes=10,
            shape=(1, 28, 28),
            default_root="/usr/share/datasets/fashion-mnist",
            files=_IDX_FILES,
            how_to_get=(
                "apt-get install dataset-fashion-mnist (installs them in "
                "/usr/share/datasets/fashion-mnist), or download the four .gz files from "
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ and pass data.root=DIR"
            ),
            augment=False,
            mean=(0.2860,),
            std=(0.3530,),
            subdirs=("fashion-mnist", "FashionMNIST/raw"),
            gzip_ok=True,
            read=_idx_reader(10),
            sizes=(60000, 10000),
        ),
        DatasetInfo(
            name="mnist",
            num_classes=10,
            shape=(1, 28, 28),
            default_root=None,
            files=_IDX_FILES,
            how_to_get=(
                "download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
                "(mirror of http://yann.lecun.com/exdb/mnist/) and pass data.root=DIR"
            ),
            augment=False,
            mean=(0.1307,),
            std=(0.3081,),
            subdirs=("mnist", "MNIST/raw"),
            gzip_ok=True,
            read=_idx_reader(10),
            sizes=(60000, 10000),
        ),
        DatasetInfo(
            name="cifar10",
            num_classes=10,
            shape=(3, 32, 32),
            default_root=None,
            files=(*_CIFAR10_TRAIN, "test_batch"),
            how_to_get=(
                "download and unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and "
                "pass data.root=DIR (the cifar-10-batches-py folder or its parent)"
            ),
            augment=True,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2471, 0.2435, 0.2616),
            subdirs=("cifar-10-batches-py",),
            read=_cifar_reader(_CIFAR10_TRAIN, "test_batch", "labels", 10),
            sizes=(50000, 10000),
        ),
        DatasetInfo(
            name="cifar100",
            num_classes=100,
            shape=(3, 32, 32),
            default_root=None,
            files=("train", "test"),
            how_to_get=(
                "download and unpack https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and "
                "pass data.root=DIR (the cifar-100-python folder or its parent)"
            ),
            augment=True,
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            subdirs=("cifar-100-python",),
            read=_cifar_reader(("train",), "test", "fine_labels", 100),
            sizes=(50000, 10000),
        ),
        DatasetInfo(
            name="svhn",
            num_classes=10,
            shape=(3, 32, 32),
            default_root=None,
            files=("train_32x32.mat", "test_32x32.mat"),
            how_to_get=(
                "download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and "
                "http://ufldl.stanford.edu/housenumbers/test_32x32.mat and pass data.root=DIR"
            ),
            augment=True,
            mean=(0.4377, 0.4438, 0.4728),
            std=(0.1980, 0.2010, 0.1970),
            subdirs=("svhn",),
            read=_read_svhn,
            sizes=(73257, 26032),
        ),
    )
}

_CACHE: dict[tuple[str, Path], RawData] = {}


def dataset_info(name: str) -> DatasetInfo:
    """Info for a registered dataset; ValueError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"data.name must be one of {sorted(DATASETS)}, got {name!r}") from None


def load_raw(name: str, root: str | Path | None = None) -> RawData:
    """Decoded arrays of dataset `name` under `root` (or its default), read once per process."""
    info = dataset_info(name)
    expected = ", ".join(f + ("[.gz]" if info.gzip_ok else "") for f in info.files)
    if root is None and info.default_root is None:
        raise DatasetError(
            f"{name} has no default location, so data.root must name a folder holding "
            f"{expected}. To get them: {info.how_to_get}"
        )
    base = Path(root if root is not None else info.default_root).expanduser().resolve()
    key = (name, base)
    if key not in _CACHE:
        folder, paths = _locate(info, base, expected)
        try:
            raw = info.read(paths)
        except DatasetError as e:
            raise DatasetError(
                f"{name} dataset in {folder} is malformed: {e}. Expected files: {expected}. "
                f"To get good copies: {info.how_to_get}"
            ) from e
        for array in raw:
            array.flags.writeable = False  # shared by every trial in this process
        _CACHE[key] = raw
    return _CACHE[key]


def _locate(info: DatasetInfo, base: Path, expected: str) -> tuple[Path, dict[str, Path]]:
    """The first of base and base/<subdir> holding every expected file."""
    folders = [base, *(base / sub for sub in info.subdirs)]
    missing: dict[Path, list[str]] = {}
    for folder in folders:
        found = {f: _find(folder, f, info.gzip_ok) for f in info.files}
        paths = {f: p for f, p in found.items() if p is not None}
        missing[folder] = [f for f in info.files if f not in paths]
        if not missing[folder]:
            return folder, paths
    closest = min(folders, key=lambda folder: len(missing[folder]))
    partial = (
        f" (missing from {closest}: {', '.join(missing[closest])})"
        if len(missing[closest]) < len(info.files)
        else ""
    )
    raise DatasetError(
        f"{info.name} dataset not found: looked in {', '.join(map(str, folders))} for "
        f"{expected}{partial}. To get them: {info.how_to_get}"
    )


def _find(folder: Path, file: str, gzip_ok: bool) -> Path | None:
    for candidate in (file, file + ".gz") if gzip_ok else (file,):
        if (folder / candidate).is_file():
            return folder / candidate
    return None
