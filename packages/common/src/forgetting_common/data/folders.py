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
):
    """``torchvision.datasets.ImageFolder`` over ``root/set_name/split``, checked.

    ``num_classes``: if given, the folder must hold exactly that many class folders.
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
    return dataset
