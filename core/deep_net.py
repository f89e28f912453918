"""TabularNet: the PyTorch module of the `deep` family (embeddings, batch norm, dropout)."""

from __future__ import annotations

import torch
from torch import nn


def embedding_size(levels: int, cap: int) -> int:
    """An embedding's width for a category of `levels` codes: half the levels, at most `cap`."""
    return max(1, min(cap, (levels + 1) // 2))


class TabularNet(nn.Module):
    """Category codes (the first `len(cardinalities)` columns) through embeddings, joined to the
    numeric columns, then `depth` blocks of Linear, BatchNorm, ReLU and Dropout.

    A code is the ordinal encoder's (-1 for an unseen category); it is shifted by one so that 0
    is "unseen", and a code the training rows never held is read as unseen too.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        n_out: int,
        hidden_units: int = 64,
        depth: int = 2,
        dropout: float = 0.2,
        embedding_max_dim: int = 16,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.n_categorical = len(cardinalities)
        dims = [embedding_size(c, embedding_max_dim) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)
        )
        self.register_buffer("levels", torch.tensor(cardinalities, dtype=torch.long))
        width = n_numeric + sum(dims)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden_units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_units))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_units
        layers.append(nn.Linear(width, n_out))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_categorical
        parts = [x[:, k:]]
        if k:
            codes = x[:, :k].round().long() + 1
            codes = torch.where((codes < 0) | (codes >= self.get_buffer("levels")), 0, codes)
            parts = [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)] + parts
        out: torch.Tensor = self.body(torch.cat(parts, dim=1))
        return out
