"""A FIFO memory bank of past embeddings that also keeps their labels (MoCo-style).

Unlike lightly's ``MemoryBankModule``, this bank keeps a label with every entry, and its
contents (entries, labels and write position) are buffers in ``state_dict()``, so a
checkpoint restores them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tcl_ssl.input_checks import check_count, check_embeddings, check_ids, check_same_device

#: label stored for entries enqueued without labels (self-supervised)
NO_LABEL = -1


class LabeledMemoryBank(nn.Module):
    """Ring buffer of ``size`` embeddings of width ``dim`` with an int64 label each.

    Starts empty; :meth:`get` returns only the filled part, so no random vectors act as
    negatives. Everything, including the write position, is saved in ``state_dict()``.
    With ``dim=None`` the width is taken from the first enqueued batch (or from a loaded
    state dict, or :meth:`materialize`).

    Args:
        size: number of entries ``K`` (>= 1); once full, each enqueued entry replaces the
            oldest.
        dim: width ``D`` of the embeddings (>= 1), or ``None`` to take it from the first
            batch.

    Raises:
        ValueError: when ``size`` or ``dim`` is not an integer >= 1.

    Example:
        >>> import torch
        >>> from tcl_ssl.memory_bank import LabeledMemoryBank
        >>> bank = LabeledMemoryBank(4, 2)
        >>> bank.enqueue(torch.ones(3, 2), torch.tensor([7, 8, 9]))
        >>> bank.enqueue(torch.zeros(2, 2))          # no labels: stored as NO_LABEL (-1)
        >>> embeddings, labels = bank.get()
        >>> labels.tolist()
        [-1, 8, 9, -1]
    """

    embeddings: Tensor
    labels: Tensor
    position: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int | None = None) -> None:
        super().__init__()
        size = check_count("memory bank size", size, minimum=1)
        dim = None if dim is None else check_count("memory bank dim", dim, minimum=1)
        self.size = size
        self.dim = dim
        self.register_buffer("embeddings", torch.zeros(size, dim or 0))
        self.register_buffer("labels", torch.full((size,), NO_LABEL, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"

    def materialize(self, dim: int) -> None:
        """Set the width of a bank built with ``dim=None`` (no-op once it has one).

        Args:
            dim: width ``D`` of the embeddings (>= 1).

        Raises:
            ValueError: when ``dim`` is < 1.
        """
        if self.dim is None:
            dim = check_count("memory bank dim", dim, minimum=1)
            self.dim = dim
            self.embeddings = torch.zeros(self.size, dim, device=self.embeddings.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "embeddings")
        if self.dim is None and saved is not None and saved.ndim == 2 and saved.shape[1] > 0:
            self.materialize(saved.shape[1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get(self) -> tuple[Tensor, Tensor]:
        """The filled part of the bank.

        Returns:
            ``(embeddings, labels)``: views of the stored ``(K, dim)`` embeddings and their
            ``(K,)`` int64 labels (:data:`NO_LABEL` for entries enqueued without labels),
            ``K <= size`` the number of entries filled so far, in slot order (not in order
            of age once the bank has wrapped).
        """
        count = int(self.filled)
        return self.embeddings[:count], self.labels[:count]

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch of entries, overwriting the oldest ones once the bank is full.

        Only the last ``size`` rows are kept when ``B > size``. Runs without gradients; the
        entries are copied in the bank's dtype and device.

        Args:
            embeddings: ``(B, dim)`` embeddings (fixes the width of a bank built with
                ``dim=None``).
            labels: ``(B,)`` integer labels; ``None`` stores :data:`NO_LABEL`.

        Raises:
            ValueError: when ``embeddings`` is not a floating ``(B, dim)`` tensor with data, or
                ``labels`` not a ``(B,)`` integer tensor on the same device.
        """
        if isinstance(embeddings, torch.Tensor) and self.dim is None and embeddings.ndim == 2:
            self.materialize(embeddings.shape[1])
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ValueError(f"memory bank expects (B, {self.dim}) embeddings, got {shape}")
        check_embeddings("memory bank embeddings", embeddings, check_finite=False)
        if labels is not None:
            check_ids("memory bank labels", labels, embeddings.shape[0])
            check_same_device(embeddings=embeddings, labels=labels)
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
