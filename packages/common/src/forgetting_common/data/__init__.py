"""Datasets shared by the packages, loaded as tensors, with clear errors and fake writers.

Every loader takes a root resolved by :func:`resolve_root`: the flag the user gave, else the
``FORGETTING_DATA`` environment variable, else the original script's default.
"""

from forgetting_common.data.cifar import load_cifar, load_cifar_pickles, load_image_zip_or_folder
from forgetting_common.data.digits import load_digits
from forgetting_common.data.folders import image_folder_split
from forgetting_common.data.mnist import load_emnist, load_mnist, permute_pixels, pixel_permutation
from forgetting_common.data.roots import DATA_ENV, DatasetError, download_guard, resolve_root
from forgetting_common.data.tensors import ImageTensors, augment_batch, index_batches, normalize
from forgetting_common.data.text import Corpus, Dictionary, batchify

__all__ = [
    "DATA_ENV",
    "Corpus",
    "DatasetError",
    "Dictionary",
    "ImageTensors",
    "augment_batch",
    "download_guard",
    "batchify",
    "image_folder_split",
    "index_batches",
    "load_cifar",
    "load_cifar_pickles",
    "load_digits",
    "load_emnist",
    "load_image_zip_or_folder",
    "load_mnist",
    "normalize",
    "permute_pixels",
    "pixel_permutation",
    "resolve_root",
]
