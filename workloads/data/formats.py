"""Decoders for the on-disk formats of the supported image datasets.

Every reader returns ``(images, labels)`` as numpy arrays: images uint8
[N, C, H, W], labels int64 [N]. Problems with a file raise ``DatasetError``
naming the file and what is wrong with it; the catalog adds the dataset name
and how to obtain the files.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


class DatasetError(ValueError):
    """A dataset is missing or its files are malformed."""


def read_bytes(path: Path) -> bytes:
    """Whole file contents, transparently gunzipped for ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DatasetError(f"cannot read {path}: {e}") from e


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (header: magic, then big-endian uint32 dims)."""
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path} is truncated ({len(raw)} bytes, no IDX header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetError(f"{path} has IDX magic number {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated inside its IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DatasetError(
            f"{path} is {len(raw)} bytes but its IDX header {dims} implies {expected} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(
    images_path: Path, labels_path: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images (N, H, W) and labels (N,) -> ([N, 1, H, W], [N])."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    _check_label_range(labels_path, labels, num_classes)
    return images[:, None], labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: a dataset root is user input."""

    _allowed = {
        ("_codecs", "encode"),  # how protocol-2 pickles from Python 3 store bytes
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):
            # Pickles from numpy 1.x (CIFAR's are from 2009) name numpy.core, now numpy._core.
            try:
                return super().find_class("numpy._core." + module[len("numpy.core."):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def read_cifar_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python pickle: rows of 3072 bytes (R plane, G plane, B plane) -> [N, 3, 32, 32]."""
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    except Exception as e:  # truncated or foreign pickles fail in many ways
        raise DatasetError(
            f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} holds a {type(batch).__name__}, expected a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise DatasetError(
            f"{path} lacks the key(s) {missing} (has {sorted(map(str, batch))})"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),):
        raise DatasetError(
            f"{path}: '{label_key}' has shape {labels.shape}, expected ({len(data)},)"
        )
    labels = labels.astype(np.int64)
    _check_label_range(path, labels, num_classes)
    return data.reshape(-1, 3, 32, 32), labels


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits: X (32, 32, 3, N), y (N, 1) in 1..10 where 10 is digit 0."""
    import scipy.io  # only SVHN needs scipy; keep it off the import path of the rest

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except FileNotFoundError as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError on damaged files
        raise DatasetError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path} lacks the variables 'X' and 'y'")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    y = y.reshape(-1).astype(np.int64)
    if len(y) != x.shape[3]:
        raise DatasetError(f"{path}: y has {len(y)} labels for {x.shape[3]} images")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DatasetError(f"{path}: labels span {y.min()}..{y.max()}, expected 1..10")
    y[y == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, y


def _check_label_range(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )
