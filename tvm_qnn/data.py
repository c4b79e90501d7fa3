# SPDX-License-Identifier: Apache-2.0
"""Offline data sets: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and scikit-learn digits.

Nothing is downloaded: Fashion-MNIST is read from a folder of the four IDX ``.gz`` files —
``root``, else ``$TVM_QNN_DATA_DIR``, else Debian's ``/usr/share/datasets/fashion-mnist``
(``make data`` installs the package); the 8×8 digits ship inside scikit-learn.
Images come back as float32 ``[N, 1, H, W]`` scaled to [-1, 1], labels as int64.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import TvmQnnError
from .knobs import data_dir

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder the Fashion-MNIST files are read from (first of root, knob, Debian's)."""
    for candidate in (root, data_dir(), DEBIAN_FASHION_MNIST):
        if candidate and all((Path(candidate) / f).exists() for pair in _FILES.values()
                             for f in pair):
            return Path(candidate)
    raise TvmQnnError(
        "Fashion-MNIST not found: pass root=, set TVM_QNN_DATA_DIR, or install Debian's "
        f"dataset-fashion-mnist (`make data`), which puts it in {DEBIAN_FASHION_MNIST}")


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` ("train": 60 000, "test": 10 000) as (images, labels).

    Images are in [-1, 1] (``pixel / 127.5 - 1``), or in [0, 1] (``pixel / 255``) with
    ``unit=True`` — what the shipped models take.
    """
    if split not in _FILES:
        raise TvmQnnError(f"split={split!r}: 'train' or 'test'")
    folder = fashion_mnist_dir(root)
    images_file, labels_file = _FILES[split]
    images = _read_idx(folder / images_file, 16).reshape(-1, 1, 28, 28)
    labels = _read_idx(folder / labels_file, 8).astype(np.int64)
    if len(images) != len(labels):
        raise TvmQnnError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if unit:
        return images.astype(np.float32) / 255.0, labels
    return images.astype(np.float32) / 127.5 - 1.0, labels


def load_digits(split: str = "train", test_fraction: float = 0.25
                ) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (1797 images), split deterministically."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 8.0 - 1.0).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(len(labels) * (1 - test_fraction))
    idx = order[:cut] if split == "train" else order[cut:]
    return images[idx], labels[idx]


DATASETS = {"fashion-mnist": load_fashion_mnist, "digits": load_digits}


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None):
    """Load ``name`` ("fashion-mnist" or "digits") ``split`` as (images, labels)."""
    if name == "fashion-mnist":
        return load_fashion_mnist(split, root)
    if name == "digits":
        return load_digits(split)
    raise TvmQnnError(f"unknown dataset {name!r}: one of {sorted(DATASETS)}")
