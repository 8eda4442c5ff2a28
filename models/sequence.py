"""Track-level classifier: a bidirectional LSTM over a face track's frame embeddings."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.registry import register_model

logger = logging.getLogger(__name__)


class TrackLSTM(nn.Module):
    """Bidirectional LSTM over ``[B, T, D]`` padded embeddings -> one fake logit per track.

    Sequences are packed with their true lengths, so padding values never reach
    the LSTM. The track summary is the concatenation of the last layer's forward
    state after the last real step and its backward state after the first step
    (each direction has then read the whole track), followed by dropout and a
    linear layer to one logit.

    Attributes:
        input_dim: Width of the frame embeddings.
        hidden_dim: LSTM hidden size per direction.
        num_layers: Stacked LSTM layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 128, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if input_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(
                "input_dim, hidden_dim and num_layers must be >= 1, "
                f"got {input_dim}, {hidden_dim}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.lstm = nn.LSTM(
            input_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,  # inter-layer only; LSTM warns otherwise
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_dim, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Score a batch of padded tracks.

        Args:
            x: Embeddings ``[B, T, D]``; steps at or after a track's length are ignored.
            lengths: Int64 ``[B]`` true lengths, each in ``[1, T]``.

        Returns:
            Fake logits ``[B]``.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected x of shape [B, T, {self.input_dim}], got {list(x.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.int64).to("cpu")  # pack needs CPU lengths
        if lengths.shape != (x.shape[0],):
            raise ValueError(f"lengths must have shape [{x.shape[0]}], got {list(lengths.shape)}")
        if x.shape[0] == 0:
            return x.new_zeros((0,))
        if int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]:
            raise ValueError(f"lengths must be in [1, {x.shape[1]}], got {lengths.tolist()}")
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        # h_n: [num_layers * 2, B, H] in the caller's batch order (pack un-sorts it).
        _, (h_n, _) = self.lstm(packed)
        summary = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return self.head(self.dropout(summary)).squeeze(-1)


def pad_tracks(tracks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length ``(T_i, D)`` embeddings -> zero-padded float32 ``(B, T, D)`` and lengths ``(B,)``."""
    lengths = torch.tensor([len(t) for t in tracks], dtype=torch.int64)
    padded = torch.zeros((len(tracks), int(lengths.max()), tracks[0].shape[1]), dtype=torch.float32)
    for i, t in enumerate(tracks):
        padded[i, : len(t)] = torch.from_numpy(np.asarray(t, np.float32))
    return padded, lengths


@register_model("bilstm", kind="sequence")
def bilstm(input_dim: int, hidden_dim: int = 128, num_layers: int = 1, dropout: float = 0.0) -> TrackLSTM:
    """Bidirectional LSTM track classifier (see :class:`TrackLSTM`)."""
    return TrackLSTM(input_dim, hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout)
