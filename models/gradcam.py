"""Grad-CAM (Selvaraju et al. 2017) over the frame model's last feature map.

Where in a face crop the EfficientNet finds evidence for "fake": the feature
maps are weighted by the spatial mean of the fake logit's gradient, summed,
rectified and upsampled to the crop. The GAN-detection write-up this project
draws on used it to show what such detectors look at (often blending seams
and textures rather than the face's content).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.frame import FrameModel


def grad_cam(model: FrameModel, x: torch.Tensor, class_index: int) -> tuple[np.ndarray, float]:
    """Heat map ``[H, W]`` in [0, 1] for one normalised crop ``x`` ``[1, 3, H, W]``, and the class probability.

    A map that is zero everywhere (no positive evidence) stays zero.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image [1, 3, H, W], got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            features = model.features(x)
            features.retain_grad()
            logits = model.head(F.adaptive_avg_pool2d(features, 1).flatten(1))
            model.zero_grad(set_to_none=True)
            logits[0, class_index].backward()
        weights = features.grad.mean(dim=(2, 3), keepdim=True)  # [1, C, 1, 1]
        cam = F.relu((weights * features).sum(dim=1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        top = float(cam.max())
        heat = (cam / top).numpy() if top > 0 else cam.numpy()
        probability = float(torch.softmax(logits.detach(), dim=1)[0, class_index])
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heat.astype(np.float32), probability
