"""Training losses for the frame model: cross-entropy plus a pairwise contrastive term.

The contrastive term follows DeepFD (Hsu et al. 2018, "Learning to detect fake
face images in the wild"): embeddings of two crops of the same class are pulled
together, embeddings of different classes pushed at least ``margin`` apart.
"""
from __future__ import annotations

import logging
import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

_SQRT_EPS = 1e-12  # keeps d(sqrt)/dx finite when two embeddings coincide


def contrastive_pair_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 1.0,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean pairwise contrastive loss over all pairs ``i < j`` of a batch.

    For a pair at Euclidean distance ``d``: ``d**2`` when the labels agree,
    ``max(0, margin - d)**2`` when they differ (no factor 1/2). By default the
    embeddings are L2-normalised first, so ``d`` lies in ``[0, 2]`` and the
    margin means the same thing whatever the embedding scale; pass
    ``normalize=False`` for raw distances.

    Args:
        embeddings: ``[B, D]`` feature vectors.
        labels: ``[B]`` class ids (any integers; only equality matters).
        margin: Distance beyond which different-class pairs cost nothing.
        normalize: L2-normalise the embeddings before measuring distances.

    Returns:
        Scalar tensor; 0 (still attached to the graph) when ``B < 2``.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [B, D], got {list(embeddings.shape)}")
    labels = labels.reshape(-1)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {embeddings.shape[0]} embeddings")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    batch = embeddings.shape[0]
    if batch < 2:
        return embeddings.sum() * 0.0
    x = embeddings.float()
    if normalize:
        x = F.normalize(x, dim=1)
    # Squared distances from the Gram matrix: O(B^2 D) time, no [B, B, D] tensor.
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    same = labels[:, None] == labels[None, :]
    dist = torch.sqrt(d2 + _SQRT_EPS)
    pair_loss = torch.where(same, d2, F.relu(margin - dist) ** 2)
    upper = torch.triu(torch.ones(batch, batch, dtype=torch.bool, device=x.device), diagonal=1)
    return pair_loss[upper].mean()


class FrameLoss(nn.Module):
    """Cross-entropy on the logits plus ``contrastive_weight`` times :func:`contrastive_pair_loss`.

    Logits with two or more columns use softmax cross-entropy; a single fake
    logit (``[B]`` or ``[B, 1]``) uses binary cross-entropy with logits, with
    label smoothing applied the same way (targets ``y(1 - s) + s/2``).

    Args:
        contrastive_weight: Weight of the contrastive term; 0 disables it (not computed).
        margin: Contrastive margin.
        label_smoothing: Label smoothing of the cross-entropy, in ``[0, 1)``.
        normalize: L2-normalise embeddings in the contrastive term.
    """

    def __init__(
        self,
        *,
        contrastive_weight: float = 0.0,
        margin: float = 1.0,
        label_smoothing: float = 0.0,
        normalize: bool = True,
    ):
        super().__init__()
        if contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {contrastive_weight}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.contrastive_weight = float(contrastive_weight)
        self.margin = float(margin)
        self.label_smoothing = float(label_smoothing)
        self.normalize = normalize

    def extra_repr(self) -> str:
        return (f"contrastive_weight={self.contrastive_weight}, margin={self.margin}, "
                f"label_smoothing={self.label_smoothing}, normalize={self.normalize}")

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 1 or logits.shape[-1] == 1:
            target = labels.reshape(-1).float()
            if self.label_smoothing:
                target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), target)
        return F.cross_entropy(logits.float(), labels.long(), label_smoothing=self.label_smoothing)

    def forward(
        self, logits: torch.Tensor, embeddings: torch.Tensor | None, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Loss of one batch.

        Args:
            logits: ``[B, C]`` class logits, or ``[B]`` / ``[B, 1]`` fake logits.
            embeddings: ``[B, D]`` embeddings; may be ``None`` when the contrastive term is off.
            labels: ``[B]`` integer labels (0 real, 1 fake).

        Returns:
            ``{"loss": total, "ce": cross-entropy, "contrastive": unweighted
            contrastive term (0 when disabled)}``; only ``"loss"`` is meant for backward.
        """
        ce = self._cross_entropy(logits, labels)
        if self.contrastive_weight > 0:
            if embeddings is None:
                raise ValueError("contrastive_weight > 0 needs the model's embeddings")
            contrastive = contrastive_pair_loss(embeddings, labels, self.margin,
                                                normalize=self.normalize)
            loss = ce + self.contrastive_weight * contrastive
        else:
            contrastive = torch.zeros((), dtype=ce.dtype, device=ce.device)
            loss = ce
        return {"loss": loss, "ce": ce, "contrastive": contrastive}
