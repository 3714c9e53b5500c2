"""Penn-Treebank-style corpora: ``train.txt``, ``valid.txt``, ``test.txt`` → token ids and vocabulary.

Each line is split on whitespace and ends with an ``<eos>`` token, the convention of the
word-level language-modelling code the originals build on. The vocabulary is built over the
three files in the order train, valid, test, so ids match that convention.
"""

from __future__ import annotations

from pathlib import Path

import torch

from forgetting_common.data.roots import DatasetError, missing

SPLITS = ("train", "valid", "test")


class Dictionary:
    """Word ↔ id, ids assigned in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.idx2word)


class Corpus:
    """The three splits of a text folder as 1-D int64 tensors, with one shared :class:`Dictionary`."""

    def __init__(self, path: str | Path, flag: str = "--data_path") -> None:
        self.path = Path(path)
        layout = "a folder with train.txt, valid.txt and test.txt (one sentence per line)"
        if not self.path.is_dir():
            raise missing("text corpus", self.path, layout, flag)
        for split in SPLITS:
            if not (self.path / f"{split}.txt").is_file():
                raise missing(f"text corpus file {split}.txt", self.path / f"{split}.txt", layout, flag)
        self.dictionary = Dictionary()
        self.train = self._tokenize(self.path / "train.txt")
        self.valid = self._tokenize(self.path / "valid.txt")
        self.test = self._tokenize(self.path / "test.txt")

    def _tokenize(self, file: Path) -> torch.Tensor:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DatasetError(f"{file} is not UTF-8 text ({err})") from err
        ids: list[int] = []
        add = self.dictionary.add_word
        for line in text.splitlines():
            ids.extend(add(w) for w in line.split())
            ids.append(add("<eos>"))
        if not ids:
            raise DatasetError(f"{file} holds no tokens")
        return torch.tensor(ids, dtype=torch.int64)

    @property
    def num_tokens(self) -> int:
        return len(self.dictionary)


def batchify(data: torch.Tensor, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Cut a token stream into ``batch_size`` columns ``[T, batch_size]``, dropping the remainder."""
    steps = data.size(0) // batch_size
    if steps == 0:
        raise DatasetError(f"{data.size(0)} tokens are too few for batch size {batch_size}")
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous().to(device)
