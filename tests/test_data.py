"""Dataset decoding, splitting, batching and augmentation, on files written in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from workloads.data import (
    DATASETS,
    DatasetError,
    Split,
    augment_crop_flip,
    batches,
    load_dataset,
    num_batches,
)

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------- writers of the real formats


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx(folder: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        write_idx(folder / IDX_NAMES[key], array, 2051 if array.ndim == 3 else 2049, gz)
    return arrays


def write_cifar_pickle(path: Path, images: np.ndarray, labels: list[int], label_key: bytes) -> None:
    # Bytes keys and a (N, 3072) uint8 'data' array, as in the original Python 2 pickles.
    batch = {b"batch_label": b"test", label_key: labels, b"data": images.reshape(len(images), -1)}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_cifar10(folder: Path, per_batch: int = 6, n_test: int = 5):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        write_cifar_pickle(folder / f"data_batch_{i}", x, y, b"labels")
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, 10, n_test).tolist()
    write_cifar_pickle(folder / "test_batch", test_x, test_y, b"labels")
    return np.concatenate(train_x), np.array(train_y), test_x, np.array(test_y)


def make_svhn(folder: Path, n_train: int = 30, n_test: int = 7):
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10  # digit 0 is stored as class 10
        scipy.io.savemat(folder / name, {"X": x, "y": y})
        out += [x, y]
    return out


def check_split_matches(split, images: np.ndarray, labels: np.ndarray) -> None:
    ids = split.ids.numpy()
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    assert split.ids.dtype == torch.int64
    np.testing.assert_array_equal(split.images.numpy(), images[ids])
    np.testing.assert_array_equal(split.labels.numpy(), labels[ids])


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("gz", [True, False])
def test_idx_decodes_exact_pixels_and_labels(tmp_path, gz):
    a = make_idx(tmp_path, gz=gz)
    ds = load_dataset("mnist", str(tmp_path), val_size=5, probe_size=8)
    assert (ds.name, ds.num_classes, ds.shape, ds.augment) == ("mnist", 10, (1, 28, 28), False)
    train_x, train_y = a["train_x"][:, None], a["train_y"].astype(np.int64)
    for split in (ds.train, ds.val, ds.probe):
        check_split_matches(split, train_x, train_y)
    check_split_matches(ds.test, a["test_x"][:, None], a["test_y"].astype(np.int64))
    assert ds.test.ids.tolist() == list(range(12))


def test_idx_found_in_torchvision_style_subfolder(tmp_path):
    a = make_idx(tmp_path / "FashionMNIST" / "raw")
    ds = load_dataset("fashion_mnist", str(tmp_path), val_size=0)
    check_split_matches(ds.train, a["train_x"][:, None], a["train_y"].astype(np.int64))


def test_cifar10_channel_major_layout_from_parent_root(tmp_path):
    train_x, train_y, test_x, test_y = make_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path), val_size=4, probe_size=3)
    assert (ds.num_classes, ds.shape, ds.augment) == (10, (3, 32, 32), True)
    for split in (ds.train, ds.val, ds.probe):
        check_split_matches(split, train_x, train_y)
    check_split_matches(ds.test, test_x, test_y)
    # A raw row is the 1024-byte red plane, then green, then blue, each row-major.
    row = train_x.reshape(len(train_x), -1)[ds.train.ids[0].item()]
    image = ds.train.images[0]
    assert image[0, 0, 1].item() == row[1]
    assert image[0, 1, 0].item() == row[32]
    assert image[1, 0, 0].item() == row[1024]
    assert image[2, 31, 31].item() == row[3071]


def test_cifar100_fine_labels_with_folder_as_root(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    train_y = [99, 0] + rng.integers(0, 100, 18).tolist()
    test_x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, 100, 4).tolist()
    write_cifar_pickle(folder / "train", train_x, train_y, b"fine_labels")
    write_cifar_pickle(folder / "test", test_x, test_y, b"fine_labels")
    ds = load_dataset("cifar100", str(folder), val_size=2)
    assert ds.num_classes == 100
    check_split_matches(ds.train, train_x, np.array(train_y))
    check_split_matches(ds.test, test_x, np.array(test_y))


def test_svhn_transposes_and_maps_label_10_to_0(tmp_path):
    x, y, test_x, test_y = make_svhn(tmp_path)
    ds = load_dataset("svhn", str(tmp_path), val_size=3)
    images = x.transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    labels = y[:, 0].astype(np.int64) % 10
    check_split_matches(ds.train, images, labels)
    check_split_matches(ds.test, test_x.transpose(3, 2, 0, 1), test_y[:, 0].astype(np.int64) % 10)
    n = ds.train.ids[0].item()
    assert ds.train.images[0, 2, 5, 7].item() == x[5, 7, 2, n]
    all_labels = torch.cat([ds.train.labels, ds.val.labels])
    assert all_labels.min() >= 0 and all_labels.max() <= 9
    assert ds.test.labels[0].item() == 0  # written as 10


def test_decoded_arrays_are_cached_per_root(tmp_path):
    make_idx(tmp_path)
    first = load_dataset("mnist", str(tmp_path), val_size=5)
    for f in tmp_path.iterdir():
        f.unlink()
    again = load_dataset("mnist", str(tmp_path), val_size=5)  # served from the cache
    assert torch.equal(first.train.images, again.train.images)


# ---------------------------------------------------------------- splits


def test_splits_disjoint_seeded_and_probe_inside_train(tmp_path):
    make_idx(tmp_path, n_train=100, n_test=30)
    root = str(tmp_path)
    ds = load_dataset("mnist", root, val_size=10, probe_size=16, seed=7)
    train, val = set(ds.train.ids.tolist()), set(ds.val.ids.tolist())
    assert len(train) == 90 and len(val) == 10 and not train & val
    assert train | val == set(range(100))
    probe = set(ds.probe.ids.tolist())
    assert len(probe) == 16 and probe <= train

    same = load_dataset("mnist", root, val_size=10, probe_size=16, seed=7)
    for name in ("train", "val", "probe", "test"):
        assert torch.equal(getattr(ds, name).ids, getattr(same, name).ids)
    other = load_dataset("mnist", root, val_size=10, probe_size=16, seed=8)
    assert not torch.equal(ds.val.ids, other.val.ids)


def test_subset_probe_and_test_size(tmp_path):
    make_idx(tmp_path, n_train=100, n_test=30)
    root = str(tmp_path)
    full = load_dataset("mnist", root, val_size=10, seed=3)
    ds = load_dataset("mnist", root, subset=25, val_size=10, probe_size=64, test_size=7, seed=3)
    assert len(ds.train) == 25 and len(ds.val) == 10 and len(ds.test) == 7
    assert len(ds.probe) == 25  # probe_size is capped by the train split
    assert set(ds.train.ids.tolist()) <= set(full.train.ids.tolist())
    assert torch.equal(ds.val.ids, full.val.ids)  # val does not move with subset
    assert len(set(ds.test.ids.tolist())) == 7 and ds.test.ids.max() < 30


def test_label_noise_moves_that_share_of_training_labels_only(tmp_path):
    make_idx(tmp_path, n_train=400, n_test=30)
    root = str(tmp_path)
    clean = load_dataset("mnist", root, val_size=50, probe_size=100, seed=4)
    noisy = load_dataset("mnist", root, val_size=50, probe_size=100, label_noise=0.3, seed=4)
    moved = noisy.train.labels != clean.train.labels
    assert moved.sum() == 105  # 0.3 of 350, each to another class
    assert torch.equal(noisy.train.ids, clean.train.ids) and torch.equal(noisy.probe.ids, clean.probe.ids)
    by_id = dict(zip(noisy.train.ids.tolist(), noisy.train.labels.tolist()))
    assert noisy.probe.labels.tolist() == [by_id[i] for i in noisy.probe.ids.tolist()]  # the labels it trains on
    for name in ("val", "test"):
        assert torch.equal(getattr(noisy, name).labels, getattr(clean, name).labels)
    again = load_dataset("mnist", root, val_size=50, probe_size=100, label_noise=0.3, seed=4)
    assert torch.equal(again.train.labels, noisy.train.labels)
    other, other_clean = (load_dataset("mnist", root, val_size=50, label_noise=n, seed=5) for n in (0.3, 0.0))
    other_moved = other.train.ids[other.train.labels != other_clean.train.labels]
    assert set(other_moved.tolist()) != set(noisy.train.ids[moved].tolist())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset": -3}, "data.subset must be a positive integer, got -3"),
        ({"subset": 0}, "data.subset must be a positive integer"),
        ({"subset": 41}, "data.subset must be at most 35"),
        ({"val_size": 40}, "data.val_size must be smaller than the 40"),
        ({"val_size": -1}, "data.val_size must be a non-negative integer"),
        ({"probe_size": 2.5}, "data.probe_size must be a non-negative integer"),
        ({"test_size": 13}, "data.test_size must be at most the 12"),
        ({"seed": -1}, "data.seed must be a non-negative integer"),
        ({"label_noise": 1.0}, "data.label_noise must be a share in"),
    ],
)
def test_argument_validation_names_the_field(tmp_path, kwargs, message):
    make_idx(tmp_path)
    kwargs = {"val_size": 5, **kwargs}
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_dataset("mnist", str(tmp_path), **kwargs)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="cifar10.*fashion_mnist.*mnist.*svhn"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- errors


def test_missing_root_names_path_files_and_how_to_get(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", str(missing))
    text = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "fashion_mnist" in text and str(missing) in text
    assert "train-images-idx3-ubyte" in text and "apt-get install dataset-fashion-mnist" in text


def test_no_default_root_asks_for_data_root():
    with pytest.raises(DatasetError, match=r"svhn.*data\.root.*train_32x32\.mat"):
        load_dataset("svhn")


def test_missing_cifar_file_names_it(tmp_path):
    make_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"missing from \S+cifar-10-batches-py: data_batch_3\)"):
        load_dataset("cifar10", str(tmp_path))


def test_bad_idx_magic(tmp_path):
    make_idx(tmp_path, gz=False)
    path = tmp_path / IDX_NAMES["train_y"]
    raw = bytearray(path.read_bytes())
    raw[3] = 0x03  # 2049 -> 2051
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", str(tmp_path))
    text = str(err.value)
    assert str(path) in text and "magic number 2051, expected 2049" in text
    assert "mnist" in text and "t10k-images-idx3-ubyte" in text


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, gz):
    make_idx(tmp_path, gz=gz)
    path = tmp_path / (IDX_NAMES["train_x"] + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DatasetError, match=f"malformed.*{path.name}"):
        load_dataset("mnist", str(tmp_path))


def test_cifar_bad_keys_and_truncated_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    batch = folder / "data_batch_2"
    with batch.open("wb") as f:
        pickle.dump({b"pixels": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DatasetError, match="data_batch_2 lacks the key"):
        load_dataset("cifar10", str(tmp_path))

    test = folder / "test_batch"
    make_cifar10(tmp_path / "good")
    batch.write_bytes((tmp_path / "good" / "data_batch_2").read_bytes())
    test.write_bytes(test.read_bytes()[:100])
    with pytest.raises(DatasetError, match="test_batch is not a readable CIFAR pickle"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": Path("x"), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load pathlib"):
        load_dataset("cifar10", str(tmp_path))


def test_svhn_wrong_shape(tmp_path):
    make_svhn(tmp_path)
    mnist_like = {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))}
    scipy.io.savemat(tmp_path / "test_32x32.mat", mnist_like)
    with pytest.raises(DatasetError, match=r"test_32x32\.mat: X is uint8 \(28, 28, 1, 2\)"):
        load_dataset("svhn", str(tmp_path))


# ---------------------------------------------------------------- batching and augmentation


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_epoch_covers_every_sample_once(tmp_path, drop_last):
    make_idx(tmp_path, n_train=100)
    ds = load_dataset("mnist", str(tmp_path), val_size=3)  # 97 train samples
    g = torch.Generator().manual_seed(0)
    seen = []
    for x, y, ids in batches(ds.train, 10, shuffle=True, generator=g, drop_last=drop_last):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert 0.0 <= x.min() and x.max() <= 1.0
        rows = torch.searchsorted(ds.train.ids, ids)  # train ids are sorted
        assert torch.equal(x, ds.train.images[rows].float() / 255)
        assert torch.equal(y, ds.train.labels[rows])
        seen += ids.tolist()
    assert len(seen) == num_batches(97, 10, drop_last) * 10 - (0 if drop_last else 3)
    if drop_last:
        assert len(set(seen)) == 90
    else:
        assert sorted(seen) == ds.train.ids.tolist()
    g = torch.Generator().manual_seed(0)
    order = [ids for _, _, ids in batches(ds.train, 10, shuffle=True, generator=g)]
    assert torch.cat(order).tolist()[:90] == seen[:90]  # same generator seed, same order


def test_unshuffled_batches_are_in_order_and_validate():
    images = torch.arange(5 * 3 * 4 * 4).remainder(256).to(torch.uint8).view(5, 3, 4, 4)
    split = Split(images, torch.arange(5), torch.arange(10, 15))
    out = list(batches(split, 2, shuffle=False))
    assert [len(y) for _, y, _ in out] == [2, 2, 1]
    assert torch.cat([ids for _, _, ids in out]).tolist() == [10, 11, 12, 13, 14]
    assert num_batches(5, 2, False) == 3 and num_batches(5, 2, True) == 2
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batches(split, 0, shuffle=False)


def test_augment_crop_flip_outputs_real_crops_of_padded_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = augment_crop_flip(x, pad=2, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips, offsets = 0, set()
    for b in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            for crop in [padded[b, :, dy : dy + 8, dx : dx + 8]]
            if torch.equal(out[b], crop.flip(-1) if flip else crop)
        ]
        assert matches, f"sample {b} is not a crop of its padded input"
        flips += matches[0][2]
        offsets.add(matches[0][:2])
    assert 10 < flips < 54 and len(offsets) > 10  # both flip states and many offsets occur


def test_augment_is_seeded_and_float_safe():
    x = torch.rand(4, 3, 32, 32)
    a = augment_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = augment_crop_flip(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.float32
    no_pad = augment_crop_flip(x, pad=0, generator=torch.Generator().manual_seed(1))
    for b in range(len(x)):  # without padding only the flip is left
        assert torch.equal(no_pad[b], x[b]) or torch.equal(no_pad[b], x[b].flip(-1))
    with pytest.raises(ValueError, match="pad must be a non-negative integer"):
        augment_crop_flip(x, pad=-1)


def test_augmented_batches_keep_labels_and_range(tmp_path):
    make_svhn(tmp_path)
    ds = load_dataset("svhn", str(tmp_path), val_size=2)
    g = torch.Generator().manual_seed(0)
    for x, y, ids in batches(ds.train, 8, shuffle=True, augment=True, generator=g):
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert torch.equal(y, ds.train.labels[torch.searchsorted(ds.train.ids, ids)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_splits_and_batches_live_on_the_device(tmp_path):
    make_svhn(tmp_path)
    ds = load_dataset("svhn", str(tmp_path), val_size=2, device="cuda")
    assert ds.train.images.is_cuda and ds.train.labels.is_cuda and ds.train.ids.is_cuda
    g = torch.Generator().manual_seed(0)
    x, y, ids = next(batches(ds.train, 8, shuffle=True, augment=True, generator=g))
    assert x.is_cuda and y.is_cuda and ids.is_cuda


# ---------------------------------------------------------------- the real Fashion-MNIST


@pytest.mark.skipif(not FASHION_ROOT.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist", val_size=0, probe_size=512)
    info = DATASETS["fashion_mnist"]
    assert (info.num_classes, info.shape, info.default_root) == (10, (1, 28, 28), str(FASHION_ROOT))
    assert (ds.num_classes, ds.shape, ds.augment) == (10, (1, 28, 28), False)
    assert len(ds.train) == 60000 and len(ds.test) == 10000 and len(ds.val) == 0
    assert ds.train.images.shape == (60000, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.train.labels.bincount().tolist() == [6000] * 10
    assert ds.test.labels.bincount().tolist() == [1000] * 10
    assert ds.train.images.max() == 255 and ds.train.images.min() == 0
