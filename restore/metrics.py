"""PSNR and SSIM on [0, 1] images (data range 1), with scikit-image's implementations.

Both clip the estimate to [0, 1] first (what a saved image holds). SSIM uses scikit-image's defaults (7×7 uniform
window) over the channels; grey images are compared as one channel.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(img: torch.Tensor) -> np.ndarray:
    arr = img.detach().float().clamp(0, 1).cpu().numpy()
    return np.moveaxis(arr, 0, -1)  # H×W×C


def psnr(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of one (C, H, W) image against its reference, data range 1."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(_np(reference), _np(estimate), data_range=1.0))


def ssim(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """SSIM of one (C, H, W) image against its reference, data range 1 (scikit-image defaults)."""
    from skimage.metrics import structural_similarity

    ref, est = _np(reference), _np(estimate)
    return float(structural_similarity(ref, est, data_range=1.0, channel_axis=-1))
