"""A FIFO memory bank of past embeddings that also keeps their labels (MoCo-style).

lightly's ``MemoryBankModule`` keeps no labels, and its contents are not restored from a
checkpoint; this bank keeps both, as buffers in ``state_dict()``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: label stored for entries enqueued without labels (self-supervised)
NO_LABEL = -1


class LabeledMemoryBank(nn.Module):
    """Ring buffer of ``size`` embeddings of width ``dim`` with an int64 label each.

    Starts empty; :meth:`get` returns only the filled part, so no random vectors act as
    negatives. Everything, including the write position, is saved in ``state_dict()``.
    With ``dim=None`` the width is taken from the first enqueued batch (or from a loaded
    state dict, or :meth:`materialize`).
    """

    def __init__(self, size: int, dim: int | None = None) -> None:
        super().__init__()
        if size < 1 or (dim is not None and dim < 1):
            raise ValueError(f"memory bank size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.register_buffer("embeddings", torch.zeros(size, dim or 0))
        self.register_buffer("labels", torch.full((size,), NO_LABEL, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"

    def materialize(self, dim: int) -> None:
        """Set the width of a bank built with ``dim=None`` (no-op once it has one)."""
        if self.dim is None:
            if dim < 1:
                raise ValueError(f"memory bank dim must be >= 1, got {dim}")
            self.dim = dim
            self.embeddings = torch.zeros(self.size, dim, device=self.embeddings.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "embeddings")
        if self.dim is None and saved is not None and saved.ndim == 2 and saved.shape[1] > 0:
            self.materialize(saved.shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get(self) -> tuple[Tensor, Tensor]:
        """The stored ``(embeddings (K, dim), labels (K,))``, ``K <= size`` (detached)."""
        count = int(self.filled)
        return self.embeddings[:count], self.labels[:count]

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor | None = None) -> None:
        """Add ``(B, dim)`` embeddings (and ``(B,)`` labels), overwriting the oldest entries."""
        if self.dim is None and embeddings.ndim == 2:
            self.materialize(embeddings.shape[1])
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"memory bank expects (B, {self.dim}) embeddings, got {tuple(embeddings.shape)}")
        embeddings = embeddings.detach()[-self.size :]
        count = embeddings.shape[0]
        if labels is None:
            labels = torch.full((count,), NO_LABEL, dtype=torch.long, device=embeddings.device)
        else:
            labels = labels.detach()[-self.size :].long()
        index = (int(self.position) + torch.arange(count, device=self.embeddings.device)) % self.size
        self.embeddings[index] = embeddings.to(self.embeddings)
        self.labels[index] = labels.to(self.labels.device)
        self.position.fill_((int(self.position) + count) % self.size)
        self.filled.fill_(min(int(self.filled) + count, self.size))
