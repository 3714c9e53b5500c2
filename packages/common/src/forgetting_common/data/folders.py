"""Generic ImageFolder splits: ``<root>/<set>/{train,val,test}/<class>/*`` (Flower102 and co.)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from forgetting_common.data.roots import DatasetError, missing


def image_folder_split(
    root: str | Path,
    set_name: str,
    split: str,
    transform: Callable | None = None,
    num_classes: int | None = None,
    flag: str = "--data",
    classes: list[str] | None = None,
):
    """``torchvision.datasets.ImageFolder`` over ``root/set_name/split``, checked.

    ``num_classes``: if given, the folder must hold exactly that many class folders.
    ``classes``: if given (say, the training split's), the class folders must be exactly these,
    so that label ids mean the same thing in every split.
    """
    from torchvision.datasets import ImageFolder

    path = Path(root) / set_name / split
    layout = f"<root>/{set_name}/{split}/<class>/<image files>"
    if not path.is_dir():
        raise missing(f"{set_name} {split} split", path, layout, flag)
    try:
        dataset = ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetError(f"{path} is not a valid image folder ({err}); expected {layout}") from err
    if num_classes is not None and len(dataset.classes) != num_classes:
        raise DatasetError(
            f"{path} has {len(dataset.classes)} class folders but {set_name} has {num_classes}; "
            f"expected {layout}"
        )
    if classes is not None and list(dataset.classes) != list(classes):
        extra = sorted(set(dataset.classes) - set(classes))[:3]
        lacking = sorted(set(classes) - set(dataset.classes))[:3]
        raise DatasetError(
            f"{path} has other class folders than the reference split "
            f"(extra {extra}, missing {lacking}); every split needs the same classes"
        )
    return dataset
