"""Build ``<dst>/Flower102/{train,val,test}/{000..101}/`` from torchvision's Flowers-102 files.

    python -m llf_ke.prepare_flower102 --src <folder holding flowers-102/> --dst $DATA_DIR [--download] [--copy]

``--src`` must hold ``flowers-102/{jpg/image_NNNNN.jpg,imagelabels.mat,setid.mat}``, what
``torchvision.datasets.Flowers102(root=SRC, download=True)`` leaves (``--download`` runs that
first, where a network exists). The official split of ``setid.mat`` is used (1020 train,
1020 val, 6149 test); class folders are named by torchvision's 0-based label, ``000``..``101``,
so the ImageFolder class index equals torchvision's label. Files are symlinked (``--copy`` copies).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from forgetting_common.cli import OneLineErrorParser
from forgetting_common.data import download_guard
from forgetting_common.errors import UserError, run_main
from forgetting_common.runlog import progress

from llf_ke.data import read_flowers102_raw
from llf_ke.prepare_folder import staged


def prepare(src: str | Path, dst: str | Path, copy: bool = False, download: bool = False) -> dict[str, int]:
    src, dst = Path(src), Path(dst)
    raw = src / "flowers-102"
    if download:
        try:
            from torchvision.datasets import Flowers102

            with download_guard(src):  # a failed download leaves nothing behind
                for split in ("train", "val", "test"):
                    Flowers102(root=str(src), split=split, download=True)
        except Exception as err:  # noqa: BLE001 - no network, bad archive ...
            raise UserError(f"could not download Flowers-102 into {src} ({err})") from err
    if not raw.is_dir():
        raise UserError(f"{raw} not found: --src must hold torchvision's flowers-102/ folder "
                        "(jpg/, imagelabels.mat, setid.mat); add --download to fetch it")
    items = read_flowers102_raw(raw)
    counts = {}
    with staged(dst / "Flower102") as target:  # renamed into place only once complete
        for split, pairs in items.items():
            for c in range(102):
                (target / split / f"{c:03d}").mkdir(parents=True, exist_ok=True)
            for path, label in progress(pairs, desc=split, unit="image"):
                if not path.is_file():
                    raise UserError(f"{path} is listed in setid.mat but missing")
                out = target / split / f"{label:03d}" / path.name
                if copy:
                    shutil.copy2(path, out)
                else:
                    os.symlink(path.resolve(), out)
            counts[split] = len(pairs)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(prog="prepare_flower102", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder holding flowers-102/")
    p.add_argument("--dst", required=True, help="data root to write Flower102/ into (the --data of train_KE_cls.py)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")
    p.add_argument("--download", action="store_true", help="download with torchvision first (needs a network)")
    args = p.parse_args(argv)
    print(f"prepare_flower102: writing {Path(args.dst) / 'Flower102'}", file=sys.stderr)
    counts = prepare(args.src, args.dst, copy=args.copy, download=args.download)
    print(f"Flower102 written to {Path(args.dst) / 'Flower102'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="prepare_flower102")
