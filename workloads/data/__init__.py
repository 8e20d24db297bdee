"""Real image datasets held as uint8 tensors on the training device, with on-device batching."""

from .augment import augment_crop_flip
from .batching import batches, num_batches
from .catalog import DATASETS, DatasetInfo
from .formats import DatasetError
from .splits import Dataset, Split, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "Split",
    "augment_crop_flip",
    "batches",
    "load_dataset",
    "num_batches",
]
