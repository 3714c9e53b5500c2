"""Per-group metrics of one batch, with the original's key names and NaN policy.

Group 0 is "True" (clean labels, or easy examples with ``--margin_groups``), group 1 is
"Random" (randomly relabelled, or the hard, low-margin examples). An empty group gives NaN.
Entropy is computed as the original did, ``-sum(p * log p)`` over the softmax, which is NaN
when a probability underflows to exactly 0; that is kept, not patched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HARD_FRACTION = 0.1

#: The 17 keys the original logged per probe (the ``Copy`` ones after forgetting).
KEYS = (
    "Iter", "Train loss", "True Label Accuracy", "Random Label Accuracy", "Overall Accuracy",
    "Copy Train loss", "Copy True Label Accuracy", "Copy Random Label Accuracy",
    "Copy Overall Accuracy", "Copy True Entropy", "Copy Random Entropy", "True Entropy",
    "Random Entropy", "True loss", "Random loss", "Copy True loss", "Copy Random loss",
)


def margin_groups(logits: torch.Tensor, fraction: float = HARD_FRACTION) -> torch.Tensor:
    """Group ids from output margins: 1 for the ``int(B * fraction)`` smallest-margin rows.

    Margin = largest minus second-largest softmax probability (label-agnostic). Ties go to the
    earlier row (stable sort).
    """
    probs = F.softmax(logits.detach().float(), dim=1)
    top2 = probs.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    hard = int(logits.shape[0] * fraction)
    groups = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)
    groups[torch.sort(margin, stable=True).indices[:hard]] = 1
    return groups


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    total = torch.where(mask > 0, values, torch.zeros_like(values)).sum()  # NaN elsewhere stays out
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


@torch.no_grad()
def group_stats(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """Accuracy (%), mean cross-entropy and mean entropy per group, and overall accuracy/loss."""
    logits = logits.detach().float()
    correct = (logits.argmax(dim=1) == labels).float()
    losses = F.cross_entropy(logits, labels, reduction="none")
    probs = F.softmax(logits, dim=1)
    entropy = (-(probs * torch.log(probs))).sum(dim=1)  # NaN if a probability underflows to 0
    clean = (groups == 0).float()
    noisy = (groups == 1).float()
    out = torch.stack([
        correct.mean() * 100.0,
        losses.mean(),
        _masked_mean(correct, clean) * 100.0,
        _masked_mean(correct, noisy) * 100.0,
        _masked_mean(losses, clean),
        _masked_mean(losses, noisy),
        _masked_mean(entropy, clean),
        _masked_mean(entropy, noisy),
    ]).tolist()
    names = ("overall_acc", "loss", "true_acc", "rand_acc", "true_loss", "rand_loss",
             "true_entropy", "rand_entropy")
    return dict(zip(names, out))


def probe_record(iteration: int, train_loss: float, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """One probe's record under the original's 17 key names."""
    return {
        "Iter": iteration,
        "Train loss": train_loss,
        "True Label Accuracy": before["true_acc"],
        "Random Label Accuracy": before["rand_acc"],
        "Overall Accuracy": before["overall_acc"],
        "Copy Train loss": after["loss"],
        "Copy True Label Accuracy": after["true_acc"],
        "Copy Random Label Accuracy": after["rand_acc"],
        "Copy Overall Accuracy": after["overall_acc"],
        "Copy True Entropy": after["true_entropy"],
        "Copy Random Entropy": after["rand_entropy"],
        "True Entropy": before["true_entropy"],
        "Random Entropy": before["rand_entropy"],
        "True loss": before["true_loss"],
        "Random loss": before["rand_loss"],
        "Copy True loss": after["true_loss"],
        "Copy Random loss": after["rand_loss"],
    }


def _fmt(value: float, decimals: int) -> str:
    return "nan" if value != value else str(round(float(value), decimals))


def stdout_line(record: dict[str, float]) -> str:
    """The original's ``--no_wandb`` line (accuracies in % to 2 dp, losses to 4 dp)."""
    return (
        f"Iteration {record['Iter']}"
        f" Train loss {_fmt(record['Train loss'], 4)}"
        f" True Label Accuracy {_fmt(record['True Label Accuracy'], 2)}"
        f" Random Label Accuracy {_fmt(record['Random Label Accuracy'], 2)}"
        f" Overall Accuracy {_fmt(record['Overall Accuracy'], 2)}"
        f" Copy Train loss {_fmt(record['Copy Train loss'], 4)}"
        f" Copy True Label Accuracy {_fmt(record['Copy True Label Accuracy'], 2)}"
        f" Copy Random Label Accuracy {_fmt(record['Copy Random Label Accuracy'], 2)}"
        f" Copy Overall Accuracy {_fmt(record['Copy Overall Accuracy'], 2)}%"
    )
