"""Training inputs by position: uint8 images on the device, normalised (and, for CIFAR,
augmented) one minibatch at a time, without a DataLoader or per-example work."""

from __future__ import annotations

import numpy as np
import torch
from forgetting_common.data import normalize, permute_pixels
from forgetting_common.data.tensors import cutout, random_crop, random_flip

from example_forgetting import data as D
from example_forgetting.cli import CifarConfig, Config, MnistConfig


class BatchInputs:
    """Training inputs by position, on the device.

    Images stay uint8 (a quarter of float32's memory) and each batch is normalised when it is
    drawn, with the same float32 operations as normalising the whole set at once, so the values
    are bit for bit the same. MNIST: normalised, then permuted (permuted MNIST). CIFAR: the crop
    pads with black (0 before normalisation) as torchvision's RandomCrop does; Cutout after
    normalisation.
    """

    def __init__(self, config: Config, images: np.ndarray, device: torch.device,
                 permutation: torch.Tensor | None, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator
        self.permutation = permutation
        self.x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        if isinstance(config, MnistConfig):
            self.mean, self.std = D.MNIST_MEAN, D.MNIST_STD
        else:
            self.mean, self.std = D.CIFAR_MEAN, D.CIFAR_STD
            self.mean_t = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            self.std_t = torch.tensor(self.std, device=device).view(1, -1, 1, 1)

    def share(self, pos: torch.Tensor, share: slice) -> torch.Tensor:
        """This rank's share of the inputs of the global minibatch ``pos``. Random augmentation
        is drawn for the whole minibatch, on every rank, so each example gets the draws it gets
        in a single-process run and the ranks' generators stay in step."""
        if isinstance(self.config, CifarConfig) and (self.config.data_augmentation or self.config.cutout):
            return self(pos)[share]
        return self(pos[share])

    def __call__(self, pos: torch.Tensor) -> torch.Tensor:
        config = self.config
        if isinstance(config, MnistConfig):
            x = normalize(self.x[pos], self.mean, self.std)
            return x if self.permutation is None else permute_pixels(x, self.permutation)
        x = self.x[pos].to(torch.float32) / 255.0
        if config.data_augmentation:
            x = random_flip(random_crop(x, 4, self.generator), self.generator)
        x = (x - self.mean_t) / self.std_t
        if config.cutout:
            x = cutout(x, config.length, self.generator, config.n_holes)
        return x
