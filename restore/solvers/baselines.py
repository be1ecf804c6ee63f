"""Classical baselines: the per-task methods a diffusion solver has to beat, with no prior at all.

========== ========== ===============================================================================================
solver     families   method
========== ========== ===============================================================================================
tv         all linear total-variation-regularised least squares, Chambolle–Pock (``restore.solvers.tv``)
bicubic    sr         bicubic (Keys a = −½) upsampling of y by the factor (Pillow)
wiener     blur       Wiener/Tikhonov deconvolution with the known kernel, (AᵀA + αI)⁻¹Aᵀ
biharmonic mask       biharmonic inpainting of the unobserved pixels (scikit-image)
nlm        denoise    non-local means (scikit-image)
bm3d       denoise    BM3D (the PyPI ``bm3d`` package of Mäkinen, Azzari & Foi)
fbp        ct         filtered back-projection with the filter chosen from the noise level and the views
zerofill   mri        magnitude of the zero-filled inverse FFT (root-sum-of-squares over coils)
========== ========== ===============================================================================================

Every baseline has ``baseline = True``, is deterministic, takes the measurement y on the [0, 1] scale, clamps its
estimate to [0, 1] and returns it on [-1, 1] like every solver; ``prior`` is ignored (``restore`` passes a stand-in).
A baseline given another operator family is refused by ``check`` with one sentence naming the baseline that fits.
The noise level σ_y is the one ``solve()`` sets (``self.noise``, on [0, 1]); 0 means noise-free or not given.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .base import Solver, SolverError, to_pm1

#: the task each family is, and the baselines that fit it (for refusals)
TASKS = {"sr": "super-resolution (sr)", "blur": "deblurring (blur)", "mask": "inpainting (mask)",
         "denoise": "denoising (denoise)", "ct": "CT (ct)", "mri": "MRI (mri)"}
FITTING = {"sr": "bicubic or tv", "blur": "wiener or tv", "mask": "biharmonic or tv", "denoise": "bm3d, nlm or tv",
           "ct": "fbp or tv", "mri": "zerofill or tv"}


def suggestion(family: str) -> str:
    """The end of a refusal sentence, e.g. "for blur use wiener or tv"."""
    if family in FITTING:
        return f"for {family} use {FITTING[family]}"
    return f"for {family} no baseline fits; use dps or daps, which need only a differentiable operator"


class Baseline(Solver):
    """A classical method for some operator families (``families``); needs no prior."""

    baseline: ClassVar[bool] = True
    stochastic = False
    needs = frozenset()
    steps_param = ""
    families: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}

    def check(self, op, prior=None) -> None:
        family = op.spec.family
        if family not in self.families:
            what = " and ".join(TASKS[f] for f in self.families)
            raise SolverError(f"{self.name} is for {what}; {suggestion(family)}.")

    @property
    def sigma(self) -> float:
        """σ_y on [0, 1] as ``solve()`` set it (0 when called directly)."""
        return float(getattr(self, "noise", 0.0) or 0.0)

    def denoise_each(self, y: Tensor, denoise, progress=None) -> Tensor:
        """``denoise(img, σ)`` on each (C, H, W) image with σ = σ_y, or σ estimated from the image when σ_y is 0
        (an image whose σ is still 0 is returned as it is); the σ used are reported as ``sigma_used``."""
        out, used = [], []
        for img in numpy_images(y):
            sigma = self.sigma or estimated_sigma(img)
            used.append(round(sigma, 6))
            out.append(img if sigma <= 0 else denoise(img, sigma))
        self.reported = {"sigma_used": used}
        return self.finish(torch.from_numpy(np.stack(out)), y, progress)

    def finish(self, x01: Tensor, like: Tensor, progress=None) -> Tensor:
        """The [0, 1] estimate, clamped and returned on [-1, 1] as float32 on the measurement's device."""
        if progress:
            progress(1, 1)
        x01 = x01.abs() if x01.is_complex() else x01
        return to_pm1(x01.to(device=like.device, dtype=torch.float32).clamp(0, 1))


def hwc(img: np.ndarray) -> np.ndarray:
    """(C, H, W) → (H, W, C), or (H, W) for one channel (scikit-image's layouts)."""
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


def chw(img: np.ndarray, channels: int) -> np.ndarray:
    return img[None] if channels == 1 else np.moveaxis(img, -1, 0)


def numpy_images(y: Tensor) -> np.ndarray:
    return y.detach().cpu().double().numpy()


def estimated_sigma(img: np.ndarray) -> float:
    """σ of (C, H, W) by scikit-image's wavelet estimator (median absolute deviation of the finest diagonal band)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(hwc(img), channel_axis=None if img.shape[0] == 1 else -1, average_sigmas=True))


# ------------------------------------------------------------------------------------------------------------------
class BicubicSolver(Baseline):
    """Bicubic upsampling of the low-resolution image by the operator's factor: Pillow's BICUBIC resize of each
    channel in float32 mode "F", the Keys cubic convolution kernel with a = −½ (the kernel MATLAB's ``imresize`` and the
    sr operator's downsampler use), pixel centres aligned ((i + ½)/f − ½), weights renormalised at the border. Exact for
    quadratic intensity ramps away from the border. No parameters; the noise is not treated."""

    name = "bicubic"
    description = "baseline: bicubic (Keys a=-1/2) upsampling (sr)"
    families = ("sr",)
    presets = {"default": {"description": "Pillow BICUBIC upsampling by the factor"}}

    def sample(self, y, op, prior, rng, progress=None):
        from PIL import Image

        _, h, w = op.image_shape
        out = np.stack([[np.asarray(Image.fromarray(ch.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC))
                         for ch in img] for img in numpy_images(y)])
        return self.finish(torch.from_numpy(out), y, progress)


class WienerSolver(Baseline):
    """Wiener (Tikhonov) deconvolution with the operator's known kernel and a white Gaussian image model
    x ~ N(μ, σ_x² I):

        x̂ = μ + (AᵀA + α I)⁻¹ Aᵀ (y − μ),   α = max(σ_y, σ_0)² / σ̂_x²,

    μ the per-channel mean of y (a blur keeps constants: Aμ = μ), σ̂_x² = max(var(y − μ) − σ_y², 10⁻⁴) the variance
    of the blurred image less the noise's (a lower bound of σ_x²), per image; σ_0 = ``sigma_floor`` = 0.001, the
    rounding noise of 8-bit images (1/(255·√12)), keeps α > 0 for noise-free data. ``alpha`` > 0 sets α by hand.

    Circular boundary and separable kernels (``op.has_svd``): exactly, in the operator's SVD,
    x̂ − μ = V diag(s/(s² + α)) Uᵀ(y − μ) — for the circular boundary this is the classical FFT formula
    X̂ = K̂·Ŷ/(|K̂|² + α) (A: ŷ = conj(K̂)x̂). Other kernels with the reflect boundary: conjugate gradients on the
    normal equations (``op.least_squares``, at most ``cg_iterations`` steps).

    Measured once (3 faces64 + 2 bsds400 128² crops from ../shared/data/train), mean PSNR (dB) with α multiplied by
    k = ¼ / ½ / 1 / 2 / 4: deblur-gauss σ_y = 0.025: 22.23 / 22.38 / 22.23 / 21.86 / 21.27, σ_y = 0.05: 21.66 /
    21.58 / 21.14 / 20.38 / 19.32; deblur-motion σ_y = 0.025: 18.29 / 19.25 / 19.77 / 19.83 / 19.49, σ_y = 0.05:
    17.98 / 18.70 / 18.90 / 18.60 / 17.92 — the model's k = 1 is within 0.5 dB of the best k. Noise-free,
    σ_0 = 0.001 / 0.003 / 0.01: 24.61 / 24.07 / 23.32 (gauss), 30.43 / 27.70 / 23.85 (motion)."""

    name = "wiener"
    description = "baseline: Wiener/Tikhonov deconvolution with the known kernel (blur)"
    families = ("blur",)
    defaults = {"alpha": 0.0, "sigma_floor": 0.001, "cg_iterations": 200}
    presets = {"default": {"description": "α = max(σ_y, 0.001)²/σ̂_x²"}}

    def alpha(self, y: Tensor) -> Tensor:
        """α per image, shaped (B, 1, 1, 1)."""
        if self.params["alpha"] > 0:
            return torch.full((y.shape[0], 1, 1, 1), float(self.params["alpha"]), device=y.device)
        centred = y - y.mean(dim=(-2, -1), keepdim=True)
        var_x = (centred.reshape(y.shape[0], -1).var(dim=1, unbiased=False) - self.sigma**2).clamp_min(1e-4)
        return (max(self.sigma, self.params["sigma_floor"]) ** 2 / var_x).view(-1, 1, 1, 1)

    def estimate(self, y: Tensor, op) -> Tensor:
        """x̂ on the [0, 1] scale, not clamped."""
        alpha = self.alpha(y)
        mean = y.mean(dim=(-2, -1), keepdim=True)
        if getattr(op, "has_svd", False):
            s = op.singulars().to(y.device)
            x = op.V((s / (s**2 + alpha)) * op.Ut(y - mean))
        else:
            x = op.least_squares(y - mean, damping=alpha, iterations=int(self.params["cg_iterations"]))
        self.reported = {"alpha_used": [float(f"{float(a):.6g}") for a in alpha.flatten()]}
        return x + mean

    def sample(self, y, op, prior, rng, progress=None):
        return self.finish(self.estimate(y, op), y, progress)


class BiharmonicSolver(Baseline):
    """Biharmonic inpainting (scikit-image ``inpaint_biharmonic``): the unobserved pixels (operator mask 0) are the
    solution of Δ²x = 0 with the observed pixels as boundary values, each channel on its own (``channel_axis``);
    observed pixels are kept as measured (their noise is not treated). No parameters."""

    name = "biharmonic"
    description = "baseline: biharmonic inpainting (mask; scikit-image)"
    families = ("mask",)
    presets = {"default": {"description": "skimage.restoration.inpaint_biharmonic"}}

    def sample(self, y, op, prior, rng, progress=None):
        from skimage.restoration import inpaint_biharmonic

        masks = op.mask.detach().cpu().numpy()
        out = []
        for i, img in enumerate(numpy_images(y)):
            missing = masks[i if masks.shape[0] > 1 else 0, 0] < 0.5
            if not missing.any():
                out.append(img)
                continue
            channel_axis = None if img.shape[0] == 1 else -1
            out.append(chw(inpaint_biharmonic(hwc(img), missing, channel_axis=channel_axis), img.shape[0]))
        return self.finish(torch.from_numpy(np.stack(out)), y, progress)


class NLMSolver(Baseline):
    """Non-local means (scikit-image ``denoise_nl_means``, Buades et al. with Darbon's fast integral-image variant):
    each pixel is the weighted mean of the pixels whose 5×5 patches (``patch_size``) in a 13×13 window
    (``patch_distance`` 6) resemble its own, weight exp(−max(d² − 2σ², 0)/h²) with d² the mean squared patch distance
    over the channels (``fast_mode``), σ = σ_y and h = 0.8·σ_y (``h_factor``, scikit-image's recommendation for
    fast_mode). σ_y = 0 (not given): σ is estimated from y (``skimage.restoration.estimate_sigma``, wavelet MAD)."""

    name = "nlm"
    description = "baseline: non-local means denoising (denoise; scikit-image)"
    families = ("denoise",)
    defaults = {"h_factor": 0.8, "patch_size": 5, "patch_distance": 6}
    presets = {"default": {"description": "fast mode, 5×5 patches, distance 6, h = 0.8σ"}}

    def sample(self, y, op, prior, rng, progress=None):
        from skimage.restoration import denoise_nl_means

        def denoise(img, sigma):
            return chw(denoise_nl_means(hwc(img), patch_size=int(self.params["patch_size"]),
                                        patch_distance=int(self.params["patch_distance"]),
                                        h=self.params["h_factor"] * sigma, fast_mode=True, sigma=sigma,
                                        channel_axis=None if img.shape[0] == 1 else -1), img.shape[0])
        return self.denoise_each(y, denoise, progress)


class BM3DSolver(Baseline):
    """BM3D (Dabov et al.; the reference implementation of Mäkinen, Azzari & Foi, PyPI ``bm3d``, profile "np"):
    grouping of similar blocks, collaborative hard thresholding then Wiener filtering, with σ = σ_y. RGB images go
    through ``bm3d_rgb`` (opponent colour space), other channel counts channel by channel. σ_y = 0 (not given): σ is
    estimated from y (``skimage.restoration.estimate_sigma``). Needs ``pip install bm3d`` (in the ``bench`` and
    ``dev`` extras)."""

    name = "bm3d"
    description = "baseline: BM3D denoising (denoise; PyPI bm3d)"
    families = ("denoise",)
    presets = {"default": {"description": "bm3d profile 'np', σ = σ_y"}}

    def check(self, op, prior=None) -> None:
        super().check(op, prior)
        try:
            import bm3d  # noqa: F401
        except ImportError:
            raise SolverError("bm3d needs the bm3d package, which is not installed; run 'pip install bm3d' "
                              "(or use nlm).") from None

    def sample(self, y, op, prior, rng, progress=None):
        import bm3d

        def denoise(img, sigma):
            if img.shape[0] == 3:
                return chw(bm3d.bm3d_rgb(hwc(img), sigma), 3)
            return np.stack([bm3d.bm3d(ch, sigma) for ch in img])
        return self.denoise_each(y, denoise, progress)


#: (upper bound of the level e, filter): the FBP filter for e (see ``fbp_filter``)
FBP_RULE = ((0.25, "ramp"), (0.35, "shepp-logan"), (0.75, "cosine"), (math.inf, "hann"))


def fbp_filter(sigma: float, size: int, views: int) -> str:
    """The FBP filter for noise σ_y on an N×N image seen from V views: the first of ``FBP_RULE`` whose bound exceeds

        e = √(e_noise² + e_views²),   e_noise = σ_y·√((N/128)·(60/V)),   e_views = 0.02·(N/V)²,

    e_noise the FBP noise relative to 128² at 60 views (its standard deviation grows as σ_y·√(N/V)), e_views the
    streaks of angular undersampling, which smoother filters also damp. Measured on 3 training slices
    (../shared/data/train/ct512_hu1024, HU window [-1000, 1000], area-resized), mean PSNR (dB), best in bold:

    N    V    σ_y  PSNR ramp / shepp-logan / cosine / hamming / hann  rule (e)
    128  60   0    **30.79** / 30.47 / 29.32 / 28.42 / 28.14          ramp (0.09)
    128  60   0.1  **30.53** / 30.31 / 29.26 / 28.38 / 28.12          ramp (0.13)
    128  60   0.2  29.85 / **29.86** / 29.10 / 28.30 / 28.05          ramp (0.22)
    128  60   0.5  26.93 / 27.69 / **28.17** / 27.78 / 27.62          cosine (0.51)
    128  60   1.0  22.71 / 24.05 / 26.02 / 26.41 / **26.45**          hann (1.00)
    128  180  0.5  **30.17** / 30.08 / 29.17 / 28.30 / 28.05          shepp-logan (0.29)
    128  180  1.0  26.72 / 27.52 / **28.09** / 27.71 / 27.56          cosine (0.58)
    128  30   0    25.62 / 26.04 / 26.38 / **26.39** / 26.32          cosine (0.36)
    256  60   0    28.38 / 28.76 / **29.02** / 28.93 / 28.84          cosine (0.36)
    256  60   0.5  25.79 / 26.73 / 27.99 / 28.27 / **28.28**          hann (0.79)
    256  180  0    **35.14** / 34.13 / 32.22 / 30.96 / 30.64          ramp (0.04)
    256  180  0.3  **33.27** / 33.04 / 31.90 / 30.81 / 30.52          ramp (0.25)
    64   60   0.4  27.73 / **27.83** / 27.11 / 26.23 / 25.97          shepp-logan (0.28)
    64   60   1.5  19.56 / 21.00 / 23.31 / 23.90 / **24.01**          hann (1.06)

    (σ_y is per detector bin, where a ray sums about N pixels: the benchmark's σ_y = 0.025 is nearly noise-free for
    FBP, so ramp wins there.) The rule's choice is the best filter in 23 of the 29 measured cases (these and
    σ_y = 0.025 to 0.2 at 128² with 60 and 180 views, 0.1 to 1.0 at 256² with 60 views, 0.2 to 1.5 at 64²) and
    within 0.1 dB of it in the other 6."""
    noise = sigma * math.sqrt((size / 128) * (60 / views))
    level = math.hypot(noise, 0.02 * (size / views) ** 2)
    return next(name for bound, name in FBP_RULE if level < bound)


class FBPSolver(Baseline):
    """Filtered back-projection (the CT operator's own FBP, skimage's ``iradon`` reproduced) with the filter chosen
    from the noise level and the angular sampling, ``filter`` = auto: ``fbp_filter`` (ramp up to a moderate noise,
    then Shepp–Logan, cosine, Hann; measured on training slices, table there). ``filter`` = ramp, shepp-logan,
    cosine, hamming or hann sets it by hand."""

    name = "fbp"
    description = "baseline: filtered back-projection, filter from the noise level and views (ct)"
    families = ("ct",)
    defaults = {"filter": "auto"}
    presets = {"default": {"description": "filter chosen from σ_y, size and views (fbp_filter)"}}

    def chosen_filter(self, op) -> str:
        from operators.ct import FILTERS

        name = self.params["filter"]
        if name == "auto":
            return fbp_filter(self.sigma, op.image_shape[-1], op.spec["views"])
        if name not in FILTERS:
            raise SolverError(f"fbp has no filter '{name}'; use auto, {', '.join(FILTERS)}.")
        return name

    def check(self, op, prior=None) -> None:
        super().check(op, prior)
        self.chosen_filter(op)

    def sample(self, y, op, prior, rng, progress=None):
        import operators

        name = self.chosen_filter(op)
        if name == op.spec["filter"]:
            x = op.A_pinv(y)
        else:
            x = operators.build(op.spec.replace(filter=name), op.image_shape, device=y.device).A_pinv(y)
        self.reported = {"filter_used": name}
        return self.finish(x, y, progress)


class ZeroFillSolver(Baseline):
    """The zero-filled MRI reconstruction: the magnitude of the inverse centred FFT of the k-space with zeros where
    it was not sampled, |F⁻¹ y|; with several coils the root sum of squares √(Σ_k |F⁻¹ y_k|²) (= |x| at full
    sampling, as the coil maps satisfy Σ_k |S_k|² = 1). Clamped to [0, 1]. No parameters."""

    name = "zerofill"
    description = "baseline: zero-filled magnitude |F^-1 y| (mri)"
    families = ("mri",)
    presets = {"default": {"description": "|F⁻¹y|, root sum of squares over coils"}}

    def sample(self, y, op, prior, rng, progress=None):
        from operators.simple import ifft2c

        c = op.image_shape[0]
        coils = y.shape[1] // c
        z = ifft2c(y.reshape(y.shape[0], c, coils, *y.shape[-2:]))
        return self.finish((z.abs() ** 2).sum(dim=2).sqrt(), y, progress)
