"""Seeded train/val/probe/test splits of a dataset, held as uint8 tensors on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .catalog import dataset_info, load_raw
from .formats import DatasetError

# Independent random streams per purpose, so e.g. the val split does not move when subset changes.
_STREAM_VAL, _STREAM_PROBE, _STREAM_TEST, _STREAM_NOISE = 0, 1, 2, 3


@dataclass
class Split:
    """A set of samples: images uint8 [N, C, H, W], labels int64 [N], ids int64 [N] (all on device).

    ids are the indices of the samples in the original train (or test) set.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """A loaded dataset; probe is a fixed subset of train used for overfitting signals."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    train: Split
    val: Split
    test: Split
    probe: Split
    augment: bool  # crop+flip by default: True for 32x32 sets, False for 28x28 sets


def load_dataset(
    name: str,
    root: str | None = None,
    *,
    subset: int | None = None,
    val_size: int = 1000,
    probe_size: int = 512,
    test_size: int | None = None,
    label_noise: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Load `name` (files decoded once per process) and split it deterministically from `seed`.

    val: val_size samples held out of the original training set. train: the rest, or
    `subset` of them. probe: the first min(probe_size, len(train)) samples of a seeded
    permutation of train. test: the whole test set, or test_size samples of it.
    label_noise: this share of the training samples (probe included) get a uniformly drawn
    other class; val and test keep their true labels.
    """
    info = dataset_info(name)
    _check_int("data.val_size", val_size, minimum=0)
    _check_int("data.probe_size", probe_size, minimum=0)
    _check_int("data.seed", seed, minimum=0)
    if subset is not None:
        _check_int("data.subset", subset, minimum=1)
    if test_size is not None:
        _check_int("data.test_size", test_size, minimum=1)
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float)) or not 0 <= label_noise < 1:
        raise DatasetError(f"data.label_noise must be a share in [0, 1), got {label_noise!r}")
    device = torch.device(device)
    raw = load_raw(name, root)

    n_train = len(raw.train_labels)
    if val_size >= n_train:
        raise DatasetError(
            f"data.val_size must be smaller than the {n_train} training samples of {name}, "
            f"got {val_size}"
        )
    order = _permutation(n_train, seed, _STREAM_VAL)
    val_ids, train_ids = order[:val_size], order[val_size:]
    if subset is not None:
        if subset > len(train_ids):
            raise DatasetError(
                f"data.subset must be at most {len(train_ids)} (training samples of {name} left "
                f"after val_size={val_size}), got {subset}"
            )
        train_ids = train_ids[:subset]
    train_ids = np.sort(train_ids)
    probe_ids = np.sort(train_ids[_permutation(len(train_ids), seed, _STREAM_PROBE)[:probe_size]])

    n_test = len(raw.test_labels)
    if test_size is None:
        test_ids = np.arange(n_test)
    elif test_size > n_test:
        raise DatasetError(
            f"data.test_size must be at most the {n_test} test samples of {name}, got {test_size}"
        )
    else:
        test_ids = np.sort(_permutation(n_test, seed, _STREAM_TEST)[:test_size])

    train_labels = _with_noise(raw.train_labels, train_ids, label_noise, info.num_classes, seed)

    def split(images: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> Split:
        return Split(
            images=torch.from_numpy(images[ids]).to(device),
            labels=torch.from_numpy(labels[ids]).to(device),
            ids=torch.from_numpy(ids.astype(np.int64)).to(device),
        )

    return Dataset(
        name=name,
        num_classes=info.num_classes,
        shape=info.shape,
        train=split(raw.train_images, train_labels, train_ids),
        val=split(raw.train_images, raw.train_labels, np.sort(val_ids)),
        test=split(raw.test_images, raw.test_labels, test_ids),
        probe=split(raw.train_images, train_labels, probe_ids),
        augment=info.augment,
    )


def _with_noise(labels: np.ndarray, train_ids: np.ndarray, share: float, num_classes: int, seed: int) -> np.ndarray:
    """labels with round(share * len(train_ids)) of the training samples moved to another class (seeded)."""
    if share == 0:
        return labels
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    flipped = rng.choice(train_ids, size=round(share * len(train_ids)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy


def _permutation(n: int, seed: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, stream]).permutation(n)


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise DatasetError(f"{field} must be {kind} integer, got {value!r}")
