"""Bare network timings for the solver-overhead figures: one evaluation of the prior (with the backward pass where a
solver backpropagates) and of a latent prior's autoencoder, timed on the very instance a solver runs."""

from __future__ import annotations

import statistics
import time

import torch

from .presets import BACKPROP, solver_of


class AutoencoderCounter:
    """Counts a latent prior's decoder passes (``graph``: the output carries an autograd graph, so a backward pass
    follows in the solvers here) and encoder passes, by wrapping the instance's ``decode``/``encode``."""

    def __init__(self, prior):
        self.decode, self.encode = prior.decode, prior.encode    # the unwrapped methods, for the bare timings
        self.reset()

        def decode(z):
            out = self.decode(z)
            if out.requires_grad:
                self.dec_graph += 1
            else:
                self.dec += 1
            return out

        def encode(x):
            self.enc += 1
            return self.encode(x)

        prior.decode, prior.encode = decode, encode

    def reset(self) -> None:
        self.dec = self.dec_graph = self.enc = 0


# ---------------------------------------------------------------------------------------------------------------------
# timing helpers


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def state_shape(prior, image_shape) -> tuple[int, ...]:
    """The shape of one image's diffusion state: the image, or its latent."""
    if not getattr(prior.card, "latent", False):
        return (prior.card.channels, *image_shape[1:])
    if hasattr(prior, "latent_shape"):
        return tuple(prior.latent_shape(tuple(image_shape[1:])))
    with torch.no_grad():
        return tuple(prior.encode(torch.zeros((1, *image_shape))).shape[1:])


def bare_eval_times(prior, shape, batch: int, repeats: int, backprop: bool, min_seconds: float = 0.0) -> dict:
    """Median seconds of one bare network evaluation on a batch (after a warm-up call), and of one evaluation with
    the backward pass to the input when ``backprop``: at least ``repeats`` calls and ``min_seconds`` of them."""
    device = prior.alphas_cumprod.device
    g = torch.Generator().manual_seed(1234)
    x = torch.randn((batch, *shape), generator=g).to(device)
    t = torch.full((batch,), 500.0, device=device)

    def fwd():
        with torch.no_grad():
            prior.model_output(x, t)

    def fwd_bwd():
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            eps, _ = prior.model_output(xx, t)
            torch.autograd.grad(eps.sum(), xx)

    out = {"fwd": _median_time(fwd, repeats, device, min_seconds), "fwd_bwd": None}
    if backprop:
        out["fwd_bwd"] = _median_time(fwd_bwd, repeats, device, min_seconds)
    return out


def _median_time(fn, repeats: int, device, min_seconds: float = 0.0) -> float:
    fn()
    _sync(device)
    times: list[float] = []
    while len(times) < max(1, repeats) or sum(times) < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_autoencoder_times(counter: AutoencoderCounter, latent_shape, image_shape, batch: int, repeats: int,
                           min_seconds: float, device) -> dict:
    """Median seconds of one decoder pass without and with the backward pass to the latent, and of one encoder
    pass, on a batch."""
    g = torch.Generator().manual_seed(4321)
    z = torch.randn((batch, *latent_shape), generator=g).to(device)
    x = (torch.rand((batch, *image_shape), generator=g) * 2 - 1).to(device)

    def dec():
        with torch.no_grad():
            counter.decode(z)

    def dec_bwd():
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            torch.autograd.grad(counter.decode(zz).sum(), zz)

    def enc():
        with torch.no_grad():
            counter.encode(x)

    return {"dec": _median_time(dec, repeats, device, min_seconds),
            "dec_bwd": _median_time(dec_bwd, repeats, device, min_seconds),
            "enc": _median_time(enc, repeats, device, min_seconds)}


def mean_bare(before: dict, after: dict) -> dict:
    """The bare evaluation times used for a run: the mean of those timed right before and right after it."""
    return {k: (before[k] + after[k]) / 2 if before[k] else None for k in before}


def network_seconds(bare: dict, nfe: float, n_bwd: float) -> float:
    """Seconds of a run's network work: its forward-only evaluations plus those it backpropagates through."""
    return (nfe - n_bwd) * bare["fwd"] + n_bwd * (bare["fwd_bwd"] or 0.0)


def backprop_evals(label: str, solver, prior, nfe: int) -> int:
    """How many of a run's network evaluations backpropagate through the network."""
    kind = BACKPROP.get(solver_of(label))
    if kind == "all":
        return nfe
    if kind == "guided":
        from restore.solvers.resample import ddim_timesteps

        return min(nfe, len(ddim_timesteps(prior.T, int(solver.params["steps"]))))
    return 0
