"""Reference implementations used only as test oracles."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def official_tcl_loss(
    z: Tensor, groups: Tensor, temperature: float, k1: float, k2: float, is_anchor: Tensor | None = None
) -> Tensor:
    """TCL written exactly as the official implementation's formula (exp()/sum(), dense masks).

    Args:
        z: ``(N, D)`` embeddings (normalised here); groups: ``(N,)`` group ids.
        is_anchor: ``(N,)`` bool, which samples are anchors (default all); the others are
            only positives/negatives of the anchors (like memory-bank entries).
    """
    z = F.normalize(z, dim=1)
    sim = z @ z.T
    n = z.shape[0]
    not_self = ~torch.eye(n, dtype=torch.bool)
    pos = (groups[:, None] == groups[None, :]) & not_self
    neg = groups[:, None] != groups[None, :]
    exp_logits = torch.exp(sim / temperature)
    denom = (
        (exp_logits * pos).sum(1)
        + k1 * (torch.exp(-sim) * pos).sum(1)
        + k2 * (exp_logits * neg).sum(1)
    )
    log_prob = sim / temperature - torch.log(denom)[:, None]
    num_pos = pos.sum(1)
    has_pos = num_pos > 0
    if is_anchor is not None:
        has_pos = has_pos & is_anchor
    per_anchor = -(log_prob * pos).sum(1)[has_pos] / num_pos[has_pos]
    return per_anchor.mean()
