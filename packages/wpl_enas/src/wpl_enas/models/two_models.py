"""The two models of the "neural brainwashing" example (spec §4): A = {θ1, θs}, B = {θ2, θs}.

``--shared=top``: ``x → Linear(d,H)[θ1|θ2] → ReLU → Linear(H,H)[θs] → ReLU → Linear(H,C)[θs]``;
``--shared=bottom`` shares the first layer instead and gives each model its own two top layers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class TwoModels(nn.Module):
    """θ1 and θ2 private, θs shared; ``forward(x, which)`` runs model A or B."""

    def __init__(self, d: int, hidden: int, classes: int, shared: str = "top") -> None:
        super().__init__()
        self.shared_mode = shared
        if shared == "top":
            self.first = nn.ModuleDict({"A": nn.Linear(d, hidden), "B": nn.Linear(d, hidden)})
            self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        else:
            self.shared = nn.Linear(d, hidden)
            self.heads = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))
                                        for m in ("A", "B")})

    def forward(self, x, which: str):
        if self.shared_mode == "top":
            return self.shared(F.relu(self.first[which](x)))
        return self.heads[which](F.relu(self.shared(x)))

    def private(self, which: str):
        return list((self.first[which] if self.shared_mode == "top" else self.heads[which]).parameters())
