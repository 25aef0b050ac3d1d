"""Segmentation loss with partial labels.

A full label y asks for p_y; a partial label (a set S of classes, :func:`pcseg.data.classmaps.partial_label`)
says only that the point belongs to one of S, so its likelihood is the marginal sum_{c in S} p_c:

    L = -log sum_{c in S} softmax(z)_c = logsumexp(z) - logsumexp(z_S)

For a file labelled ground / not ground, S = every class but ground: the loss constrains the ground
probability only (it pushes p_ground down, and leaves the split of the rest among the other classes to the
fully labelled data). No class is invented. With S = {y} the formula is the cross-entropy of y.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.classmaps import IGNORE


def allowed_classes(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C) bool: the classes each label allows (its class, its partial set; nothing for IGNORE)."""
    bits = torch.where(labels <= -2, -2 - labels, torch.where(labels >= 0, 1 << labels.clamp(min=0), 0))
    return ((bits[:, None] >> torch.arange(num_classes, device=labels.device)) & 1).bool()


def partial_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over labelled points: cross-entropy for labels >= 0 (weighted by ``weight[y]`` as
    ``F.cross_entropy`` does), the marginal likelihood above for partial labels (<= -2, weight 1); IGNORE skipped.

    With no partial label in the batch this is ``F.cross_entropy(..., ignore_index=-1)`` exactly.
    """
    partial = labels <= -2
    if not bool(partial.any()):
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE)
    full = labels >= 0
    z = logits[partial]
    allowed = allowed_classes(labels[partial], logits.shape[1])
    marginal = torch.logsumexp(z, dim=1) - torch.logsumexp(z.masked_fill(~allowed, float("-inf")), dim=1)
    total, count = marginal.sum(), marginal.new_tensor(float(marginal.numel()))
    if bool(full.any()):
        ce = F.cross_entropy(logits[full], labels[full], weight=weight, reduction="none")
        w = weight[labels[full]] if weight is not None else torch.ones_like(ce)
        total, count = total + ce.sum(), count + w.sum()
    return total / count
