"""The streams: one sample per step, a new label or pixel permutation every ``change_freq`` steps.

Datasets are held as tensors on the run's device and indexed per step (no DataLoader, no
per-sample transforms). At every task change a fresh shuffled pass over the training set
starts (sampling without replacement within a pass, restarted when exhausted), as the
original's new DataLoader iterator did. All randomness comes from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from forgetting_common.data import DatasetError, load_cifar, load_emnist, load_mnist
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_pickle
from forgetting_common.seeding import make_generator


@dataclass
class Source:
    """Inputs ``x`` ``[N, ...]`` and labels ``y`` (int64 ``[N]``).

    With ``maximum`` set, ``x`` holds raw integer pixels (uint8, 4× smaller than floats) that the
    stream scales per sample like ``ToTensor`` + ``Normalize(0.5, 0.5)``: ``(x/maximum − 0.5)/0.5``.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    description: str
    maximum: float | None = None

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.maximum is None else _scale(x, self.maximum)


def _scale(images_uint8: torch.Tensor, maximum: float = 255.0) -> torch.Tensor:
    """``ToTensor`` then ``Normalize(0.5, 0.5)``: values in [−1, 1]."""
    return (images_uint8.to(torch.float32) / maximum - 0.5) / 0.5


def load_source(dataset: str, data_dir: str | Path, limit: int | None = None) -> Source:
    """Read ``dataset`` (mnist, emnist, cifar10, mini_imagenet, digits) from ``data_dir``."""
    root = Path(data_dir)
    if dataset == "mnist":
        images, labels = load_mnist(root, train=True)
        src = Source(images.reshape(len(labels), -1), labels, 10, "MNIST train (IDX)", 255.0)
    elif dataset == "emnist":
        images, labels = load_emnist(root, "balanced", train=True)
        src = Source(images.reshape(len(labels), -1), labels, 47, "EMNIST balanced train (IDX)", 255.0)
    elif dataset == "cifar10":
        images, labels, _ = load_cifar(root, "cifar10", train=True)
        kind = "pickles" if (root / "cifar-10-batches-py").is_dir() else "JPEG re-encode"
        src = Source(images, labels, 10, f"CIFAR-10 train ({kind})", 255.0)
    elif dataset == "mini_imagenet":
        src = load_mini_imagenet(root)
    elif dataset == "digits":
        from forgetting_common.data import load_digits

        images, labels = load_digits()
        src = Source(images.reshape(len(labels), -1), labels, 10, "scikit-learn digits 8x8", 16.0)
    else:  # pragma: no cover - guarded by the registry
        raise UserError(f"unknown dataset {dataset!r}")
    if limit is not None:
        src = Source(src.x[:limit].clone(), src.y[:limit].clone(), src.n_classes,
                     src.description + f" (first {limit})", src.maximum)
    return src


FEATURES_FILE = "processed_imagenet.pkl"
TARGETS_FILE = "mini-imagenet_targets.pkl"
IMAGES_FILE = "mini-imagenet_data.pkl"


def _unpickle(path: Path):
    """A data pickle through the restricted unpickler (plain containers and NumPy arrays only)."""
    return load_pickle(path, what="mini-ImageNet file")


def load_mini_imagenet(root: Path) -> Source:
    """2048-d ResNet-50 features of mini-ImageNet (100 classes), as the original used them.

    Reads ``ROOT/mini-imagenet_targets.pkl`` and the feature matrix ``ROOT/processed_imagenet.pkl``
    (a pickled NumPy float array ``[N, 2048]``; the original cached a pickled torch tensor, which
    the restricted unpickler refuses: delete that file to recompute it). Without the feature file
    but with ``ROOT/mini-imagenet_data.pkl`` (uint8 images ``[N, H, W, 3]``) the features are
    computed once with torchvision's ImageNet ResNet-50 and cached there.
    """
    layout = (f"{root}/{TARGETS_FILE} and {root}/{FEATURES_FILE} (or {root}/{IMAGES_FILE} to compute it); "
              "set --data_dir or FORGETTING_DATA")
    if not (root / TARGETS_FILE).is_file():
        raise DatasetError(f"mini-ImageNet not found: expected {layout}")
    targets = torch.as_tensor(_unpickle(root / TARGETS_FILE), dtype=torch.int64).reshape(-1)
    if (root / FEATURES_FILE).is_file():
        try:
            feats = torch.as_tensor(_unpickle(root / FEATURES_FILE), dtype=torch.float32)
        except UserError as err:
            raise DatasetError(f"{err}; delete it to recompute the features from {root}/{IMAGES_FILE}") from err
    elif (root / IMAGES_FILE).is_file():
        feats = compute_resnet_features(torch.as_tensor(_unpickle(root / IMAGES_FILE)))
        from forgetting_common.atomic import atomic_pickle_dump

        atomic_pickle_dump(feats.numpy(), root / FEATURES_FILE)  # plain NumPy: loads without running code
    else:
        raise DatasetError(f"mini-ImageNet features not found: expected {layout}")
    if feats.dim() != 2 or feats.shape[0] != targets.shape[0]:
        raise DatasetError(f"mini-ImageNet features {tuple(feats.shape)} do not match {len(targets)} targets")
    return Source(feats, targets, 100, "mini-ImageNet ResNet-50 features")


def compute_resnet_features(images_nhwc: torch.Tensor, model=None, batch_size: int = 500) -> torch.Tensor:
    """Global-average-pooled ResNet-50 features, inputs scaled with mean 0.5 / std 0.5 as the original."""
    if model is None:
        try:
            from torchvision.models import ResNet50_Weights, resnet50

            model = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)
        except Exception as err:  # no network, no cached weights
            raise DatasetError(f"cannot load ImageNet ResNet-50 weights to compute mini-ImageNet features: {err}") from err
    model.eval()
    body = torch.nn.Sequential(*[m for name, m in model.named_children() if name != "fc"])
    x = _scale(images_nhwc.permute(0, 3, 1, 2))
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(torch.flatten(body(x[start : start + batch_size]), 1))
    return torch.cat(out)


def fake_source(dataset: str, seed: int, pool: int = 256) -> Source:
    """Random inputs of the dataset's shape with random labels (smoke runs, no files)."""
    shape, classes = FAKE_SHAPES[dataset]
    gen = make_generator(seed, "fake_data")
    x = torch.rand((pool, *shape), generator=gen) * 2 - 1
    y = torch.randint(0, classes, (pool,), generator=gen)
    return Source(x, y, classes, f"fake {dataset}-shaped data ({pool} samples)")


FAKE_SHAPES = {
    "mnist": ((784,), 10),
    "emnist": ((784,), 47),
    "cifar10": ((3, 32, 32), 10),
    "mini_imagenet": ((2048,), 100),
    "digits": ((64,), 10),
}


class PermutedStream:
    """A label- or input-permuted stream over a :class:`Source`.

    ``next()`` returns ``(x [1, ...], y [1])`` on the device. The permutation changes at step 0
    and every ``change_freq`` steps after; each change starts a new shuffled pass.
    ``restarts=True`` also returns whether this step opens a task (except the very first).
    """

    def __init__(self, name: str, source: Source, kind: str, change_freq: int, seed: int,
                 device: torch.device, criterion: str = "cross_entropy", compose: bool = True,
                 held_out: Source | None = None) -> None:
        self.name, self.kind, self.change_freq = name, kind, change_freq
        self.source_description = source.description
        self.x = source.x.to(device)
        self.maximum = source.maximum
        self.labels = source.y.to(device)
        self.n_outputs = source.n_classes
        self.n_inputs = int(source.x[0].numel())
        self.criterion = criterion
        self.device = device
        self.gen = make_generator(seed, "data")
        self.step = 0
        self.mapping = torch.arange(self.n_outputs, device=device)
        self.targets = self.labels
        self.pixel_perm: torch.Tensor | None = None
        self.task_index = -1
        self._order: list[int] = []
        self._pos = 0
        self.last_index = -1  # the latest sample's position in the source (for --track's example ids)
        self.n_examples = len(self.labels)
        # The offline variant applies each new permutation to the original labels (no composition)
        # and keeps the previous task's mapping to relabel a fixed held-out set.
        self.compose = compose
        self.previous_mapping = self.mapping
        self.held_out = None
        if held_out is not None:
            self.held_out = (held_out.scaled(held_out.x.to(device)).reshape(len(held_out.y), -1),
                             held_out.y.to(device))

    def _new_pass(self) -> None:
        self._order = torch.randperm(len(self.labels), generator=self.gen).tolist()
        self._pos = 0

    def change_task(self) -> None:
        self.task_index += 1
        if self.kind == "label":
            perm = torch.randperm(self.n_outputs, generator=self.gen).to(self.device)
            self.previous_mapping = self.mapping
            self.mapping = perm[self.mapping] if self.compose else perm
            self.targets = self.mapping[self.labels]
        else:
            self.pixel_perm = torch.randperm(self.n_inputs, generator=self.gen).to(self.device)
        self._new_pass()

    def state_dict(self) -> dict:
        """Position in the stream, the current permutations and the generator, for a checkpoint."""
        return {
            "step": self.step, "task_index": self.task_index, "pos": self._pos,
            "order": torch.tensor(self._order, dtype=torch.int64),
            "mapping": self.mapping.cpu(), "previous_mapping": self.previous_mapping.cpu(),
            "pixel_perm": None if self.pixel_perm is None else self.pixel_perm.cpu(),
            "generator": self.gen.get_state(),
        }

    def load_state_dict(self, saved: dict) -> None:
        self.step, self.task_index, self._pos = int(saved["step"]), int(saved["task_index"]), int(saved["pos"])
        self._order = saved["order"].tolist()
        self.mapping = saved["mapping"].to(self.device)
        self.previous_mapping = saved["previous_mapping"].to(self.device)
        self.targets = self.mapping[self.labels]
        perm = saved["pixel_perm"]
        self.pixel_perm = None if perm is None else perm.to(self.device)
        self.gen.set_state(saved["generator"])

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        new_task = self.step % self.change_freq == 0
        if new_task:
            self.change_task()
        self.step += 1
        if self._pos >= len(self._order):
            self._new_pass()
        i = self._order[self._pos]
        self._pos += 1
        self.last_index = i
        x = self.x[i : i + 1]
        if self.maximum is not None:
            x = _scale(x, self.maximum)
        if self.pixel_perm is not None:
            x = x.reshape(1, -1)[:, self.pixel_perm]
        return x, self.targets[i : i + 1], new_task and self.step > 1


class UtilityStream:
    """The synthetic utility task: 5 inputs ~ U(−0.5, 0.5), target = sum of two fixed inputs (MSE)."""

    change_freq = None

    def __init__(self, name: str, seed: int, device: torch.device, n_inputs: int = 5) -> None:
        self.name, self.device = name, device
        self.kind = "stationary"
        self.n_inputs, self.n_outputs, self.criterion = n_inputs, 1, "mse"
        self.gen = make_generator(seed, "data")
        self.operands = torch.randint(0, n_inputs, (2,), generator=self.gen)
        self.source_description = "synthetic utility task"
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.gen.get_state()}

    def load_state_dict(self, saved: dict) -> None:
        self.step = int(saved["step"])
        self.gen.set_state(saved["generator"])

    def next(self):
        self.step += 1
        x = torch.rand((1, self.n_inputs), generator=self.gen) - 0.5
        y = x[:, self.operands].sum(dim=1, keepdim=True)
        return x.to(self.device), y.to(self.device), False


@dataclass(frozen=True)
class TaskSpec:
    dataset: str | None
    kind: str
    change_freq: int | None


TASKS: dict[str, TaskSpec] = {
    "weight_utils": TaskSpec(None, "stationary", None),
    "feature_utils": TaskSpec(None, "stationary", None),
    "input_permuted_mnist": TaskSpec("mnist", "input", 5000),
    "input_permuted_mnist_restarts": TaskSpec("mnist", "input", 5000),
    "label_permuted_emnist": TaskSpec("emnist", "label", 2500),
    "label_permuted_emnist_offline": TaskSpec("emnist", "label", 2500),
    "label_permuted_cifar10": TaskSpec("cifar10", "label", 2500),
    "label_permuted_mini_imagenet": TaskSpec("mini_imagenet", "label", 2500),
    # Extensions: the bundled scikit-learn digits, for small real reproductions.
    "label_permuted_digits": TaskSpec("digits", "label", 500),
    "input_permuted_digits": TaskSpec("digits", "input", 500),
}
for _plain in ("input_permuted_mnist", "label_permuted_emnist", "label_permuted_cifar10",
               "label_permuted_mini_imagenet", "label_permuted_digits", "input_permuted_digits"):
    TASKS[_plain + "_stats"] = TASKS[_plain]


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def build_task(name: str, *, seed: int, device: torch.device, data_dir: str | Path, change_freq: int | None = None,
               fake_data: bool = False, dataset_limit: int | None = None):
    spec = task_spec(name)
    if spec.kind == "stationary":
        return UtilityStream(name, seed, device)
    source = fake_source(spec.dataset, seed) if fake_data else load_source(spec.dataset, data_dir, dataset_limit)
    held_out = None
    if name.endswith("_offline"):
        held_out = fake_source(spec.dataset, seed + 1, pool=HELD_OUT) if fake_data else load_held_out(data_dir)
    return PermutedStream(name, source, spec.kind, change_freq or spec.change_freq, seed, device,
                          compose=held_out is None, held_out=held_out)


HELD_OUT = 250


def load_held_out(data_dir: str | Path) -> Source:
    """The first 250 EMNIST balanced *test* images, in file order (the offline experiment)."""
    images, labels = load_emnist(Path(data_dir), "balanced", train=False)
    return Source(images[:HELD_OUT].reshape(-1, 784).clone(), labels[:HELD_OUT].clone(), 47,
                  "EMNIST balanced test (first 250)", 255.0)
