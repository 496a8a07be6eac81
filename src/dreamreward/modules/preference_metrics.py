"""Pairwise preference metrics: loss, accuracy (overall and per group), calibration.

For a pair with rewards r_better and r_worse the model's probability that the better asset wins is
p = sigmoid(r_better - r_worse) (the Bradley-Terry reading of the loss -log p). Accuracy counts
r_better > r_worse, with ties as half right (a constant reward scores 50%, not 0% or 100%).
Calibration is the expected calibration error of p over both orderings of every pair (p with
label 1 and 1 - p with label 0), so a model that is right 80% of the time should say 0.8.

All states are torchmetrics states: they sum across processes under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryCalibrationError

OTHER_GROUP = "other"


def pairwise_logistic_loss(
    r_better: Tensor, r_worse: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Mean of -log sigmoid(r_better - r_worse) over P pairs ((P,) each), stably; with
    ``weights`` (P,) the weighted mean (sum of w * loss over sum of w)."""
    losses = F.softplus(r_worse - r_better)
    if weights is None:
        return losses.mean()
    weights = weights.to(losses)
    return (weights * losses).sum() / weights.sum()


def pairwise_correct(r_better: Tensor, r_worse: Tensor) -> Tensor:
    """(P,) 1 where the better asset scores higher, 0.5 on ties, 0 otherwise."""
    return (r_better > r_worse).float() + 0.5 * (r_better == r_worse).float()


class GroupedAccuracy(Metric):
    """Pairwise accuracy per named group (failure type or rating axis) plus an ``other`` bucket.

    Args:
        groups: the group names known in advance (states need a fixed size for DDP sums).
    """

    full_state_update = False

    def __init__(self, groups: Sequence[str]) -> None:
        super().__init__()
        self.groups = [*sorted(set(groups) - {OTHER_GROUP}), OTHER_GROUP]
        self._index = {name: i for i, name in enumerate(self.groups)}
        self.add_state("correct", torch.zeros(len(self.groups)), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(len(self.groups)), dist_reduce_fx="sum")

    def update(self, correct: Tensor, groups: Sequence[str]) -> None:  # type: ignore[override]
        index = torch.tensor(
            [self._index.get(g, self._index[OTHER_GROUP]) for g in groups],
            device=self.correct.device,
        )
        self.correct.index_add_(0, index, correct.float().to(self.correct.device))
        self.total.index_add_(
            0, index, torch.ones_like(correct, dtype=torch.float).to(index.device)
        )

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        return {
            name: self.correct[i] / self.total[i]
            for i, name in enumerate(self.groups)
            if self.total[i] > 0
        }

    def counts(self) -> dict[str, int]:
        return {name: int(self.total[i]) for i, name in enumerate(self.groups) if self.total[i] > 0}


class PreferenceMetrics(nn.Module):
    """Loss, accuracy, per-defect and per-axis accuracy and calibration of one model on one split.

    Args:
        defects, axes: group names for the per-group accuracies.
        calibration_bins: bins of the expected calibration error.
    """

    def __init__(
        self, defects: Sequence[str] = (), axes: Sequence[str] = (), calibration_bins: int = 10
    ) -> None:
        super().__init__()
        from torchmetrics import MeanMetric, SumMetric

        self.loss = MeanMetric()
        self.pairs = SumMetric()
        self.accuracy = MeanMetric()
        self.by_defect = GroupedAccuracy(defects)
        self.by_axis = GroupedAccuracy(axes)
        self.calibration = BinaryCalibrationError(n_bins=calibration_bins, norm="l1")

    def update(
        self, r_better: Tensor, r_worse: Tensor, defects: Sequence[str], axes: Sequence[str]
    ) -> Tensor:
        """Accumulate P pairs; returns this batch's mean loss."""
        r_better, r_worse = r_better.detach().float(), r_worse.detach().float()
        loss = pairwise_logistic_loss(r_better, r_worse)
        correct = pairwise_correct(r_better, r_worse)
        n = r_better.numel()
        self.pairs.update(float(n))
        self.loss.update(loss, weight=n)
        self.accuracy.update(correct.mean(), weight=n)
        self.by_defect.update(correct, defects)
        self.by_axis.update(correct, axes)
        p = torch.sigmoid(r_better - r_worse)
        labels = torch.cat([torch.ones_like(p), torch.zeros_like(p)]).long()
        self.calibration.update(torch.cat([p, 1 - p]), labels)
        return loss

    def compute(self) -> dict[str, float]:
        """Flat dict: loss, accuracy, ece, pairs, accuracy/defect/<name>, accuracy/axis/<name>
        (synced across processes; every process must call it). Empty ({"pairs": 0}) without
        data."""
        pairs = float(self.pairs.compute())
        if pairs == 0:
            return {"pairs": 0.0}
        out = {
            "loss": float(self.loss.compute()),
            "accuracy": float(self.accuracy.compute()),
            "ece": float(self.calibration.compute()),
            "pairs": pairs,
        }
        out |= {f"accuracy/defect/{k}": float(v) for k, v in self.by_defect.compute().items()}
        out |= {f"accuracy/axis/{k}": float(v) for k, v in self.by_axis.compute().items()}
        return out

    def reset(self) -> None:
        for metric in (
            self.pairs,
            self.loss,
            self.accuracy,
            self.by_defect,
            self.by_axis,
            self.calibration,
        ):
            metric.reset()
