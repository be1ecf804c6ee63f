"""LPIPS (v0.1, Zhang et al. 2018) on [0, 1] images, through the ``lpips`` package, with weights that work offline.

LPIPS is defined on RGB images: grey (one-channel) images, e.g. MRI or CT, are replicated to three channels and the
value reported is LPIPS of that grey-as-RGB image (networks trained on natural photographs, so treat it as a rough
perceptual score there; callers may skip it for medical images). Both images are clipped to [0, 1] (what a saved image
holds, as for PSNR/SSIM) and scaled to [-1, 1], the range the LPIPS networks expect.

Weights are looked for in this order, and the first that is given is used (a bad one is an error, never a fallback
to random weights):

1. the ``weights`` argument (the CLI's ``--lpips-weights FILE``);
2. the environment variable ``RESTORE_LPIPS_WEIGHTS``;
3. torchvision's own ImageNet weights for the backbone, from the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
   downloaded there first when the machine can reach download.pytorch.org.

A weights file is a ``.safetensors`` (or a torch ``.pth``) file holding the backbone's conv layers under torchvision's
``features.{i}.{weight,bias}`` keys (AlexNet: i = 0, 3, 6, 8, 10; VGG16: the 13 conv layers) and, optionally, the
LPIPS linear heads ``lin{0..4}.model.1.weight``; heads it lacks come from the ``lpips`` package's bundled v0.1 files.
``../shared/data/lpips/lpips_alex_v0.1.safetensors`` is such a file for AlexNet. When no source works,
``LPIPSUnavailable`` says why and how to fix it; ``lpips_or_reason`` turns that into a reason so a run can go on.

Nothing here imports torchvision or ``lpips`` until a metric is built (both are slow to import), and no network
access is attempted when a weights file is given.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from restore.io import RestoreError

NETS = ("alex", "vgg")
ENV_WEIGHTS = "RESTORE_LPIPS_WEIGHTS"
EXAMPLE_WEIGHTS = "../shared/data/lpips/lpips_alex_v0.1.safetensors"
FIX = {"alex": f"--lpips-weights FILE or {ENV_WEIGHTS} (e.g. {EXAMPLE_WEIGHTS})",
       "vgg": f"--lpips-weights FILE or {ENV_WEIGHTS} (a .safetensors file with torchvision's vgg16().features "
              f"keys), or use the alex network with e.g. {EXAMPLE_WEIGHTS}"}
_FILE_HINT = {"alex": f"e.g. {EXAMPLE_WEIGHTS}", "vgg": "torchvision's vgg16().features keys"}
_MIN_SIDE = {"alex": 31, "vgg": 16}  # smallest image side the backbone's conv/pool stack accepts
_TV_NAMES = {"alex": ("AlexNet", "alexnet"), "vgg": ("VGG16", "vgg16")}  # (display name, torchvision builder)
_CACHE: dict[tuple[str, str, str], "LPIPSMetric"] = {}


class LPIPSUnavailable(RestoreError):
    """No LPIPS weights could be found or fetched (the metric is unavailable, not wrong)."""


class LPIPSMetric:
    """An LPIPS v0.1 network ready to compare images; build it with ``get_lpips``.

    ``source`` says where the backbone weights came from (a file path or torchvision's cache).
    """

    def __init__(self, model: torch.nn.Module, net: str, source: str, device: torch.device):
        self.model, self.net, self.source, self.device = model, net, source, device

    def distances(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """LPIPS of each pair of (C, H, W) or (B, C, H, W) images on [0, 1], as a float tensor of shape (B,)."""
        a, b = _prepare(estimate, self.net), _prepare(reference, self.net)
        if a.shape != b.shape:
            raise RestoreError(f"LPIPS needs images of the same shape, got {tuple(estimate.shape)} and "
                               f"{tuple(reference.shape)}; compare the estimate with its own reference.")
        with torch.inference_mode():
            d = self.model(a.to(self.device) * 2 - 1, b.to(self.device) * 2 - 1)
        return d.reshape(-1).float().cpu()

    def __call__(self, estimate: torch.Tensor, reference: torch.Tensor) -> "float | list[float]":
        """LPIPS as a float for one (C, H, W) pair, or a list of floats for a (B, C, H, W) batch."""
        d = self.distances(estimate, reference).tolist()
        return d[0] if estimate.dim() == 3 else d


def get_lpips(net: str = "alex", weights: "str | Path | None" = None, device: "str | torch.device" = "cpu",
              download: bool = True) -> LPIPSMetric:
    """The LPIPS metric for ``net`` ("alex" or "vgg"), built once per (net, weights, device) and cached.

    ``weights``: a weights file (see the module doc); ``None`` means $RESTORE_LPIPS_WEIGHTS, then torchvision's cache
    (fetched first if ``download`` and the machine is online). Raises ``LPIPSUnavailable`` when no weights can be had,
    ``RestoreError`` for an unusable weights file.
    """
    if net not in NETS:
        raise RestoreError(f"unknown LPIPS network '{net}'; choose one of: {', '.join(NETS)}.")
    device = torch.device(device)
    path = _weights_path(weights)
    key = (net, str(path) if path is not None else "torchvision", str(device))
    if key not in _CACHE:
        _CACHE[key] = _build(net, path, device, download)
    return _CACHE[key]


def lpips_distance(estimate: torch.Tensor, reference: torch.Tensor, net: str = "alex",
                   weights: "str | Path | None" = None, device: "str | torch.device" = "cpu") -> "float | list[float]":
    """LPIPS of a (C, H, W) estimate against its reference (a float), or of a (B, C, H, W) batch (a list)."""
    return get_lpips(net, weights, device)(estimate, reference)


def lpips_or_reason(estimate: torch.Tensor, reference: torch.Tensor, net: str = "alex",
                    weights: "str | Path | None" = None, device: "str | torch.device" = "cpu",
                    download: bool = True) -> "tuple[float | list[float] | None, str | None]":
    """``(value, None)``, or ``(None, reason)`` when LPIPS cannot be computed (no or bad weights, image too small).

    The reason is the one-sentence message of the error, fix included, for a run to report and go on.
    """
    try:
        return get_lpips(net, weights, device, download)(estimate, reference), None
    except RestoreError as exc:
        return None, str(exc)


def clear_cache() -> None:
    """Forget the built networks (tests; or to re-read a weights file that changed)."""
    _CACHE.clear()


# --- inputs -----------------------------------------------------------------------------------------------------

def _prepare(img: torch.Tensor, net: str) -> torch.Tensor:
    """(B, 3, H, W) float on [0, 1]: batch a 3-D image, replicate grey to RGB, clip."""
    if not torch.is_tensor(img) or img.dim() not in (3, 4):
        shape = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
        raise RestoreError(f"LPIPS takes a (C, H, W) or (B, C, H, W) image tensor, got {shape}; pass image tensors.")
    x = img.detach().float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.shape[1] not in (1, 3):
        raise RestoreError(f"LPIPS takes grey or RGB images, got {x.shape[1]} channels; convert the image to 1 or 3 "
                           f"channels.")
    if min(x.shape[-2:]) < _MIN_SIDE[net]:
        raise RestoreError(f"LPIPS ({net}) needs images at least {_MIN_SIDE[net]} pixels on each side, got "
                           f"{x.shape[-2]}×{x.shape[-1]}; report it only for larger images.")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0, 1)


# --- weights ----------------------------------------------------------------------------------------------------

def _weights_path(weights) -> "Path | None":
    """The explicit or $RESTORE_LPIPS_WEIGHTS file, checked to exist; None when neither is set."""
    if weights is not None and str(weights) != "":
        origin = "--lpips-weights"
    elif os.environ.get(ENV_WEIGHTS):
        weights, origin = os.environ[ENV_WEIGHTS], ENV_WEIGHTS
    else:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise RestoreError(f"the LPIPS weights file '{path}' (from {origin}) {what}; check the path "
                           f"(e.g. {EXAMPLE_WEIGHTS}).")
    return path.resolve()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors or torch (.pth/.pt) file; RestoreError naming the file if it cannot be read."""
    try:
        if path.suffix.lower() in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise ValueError("it does not hold a state dict")
            return {k: v for k, v in state.items() if torch.is_tensor(v)}
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types; torch.load many
        raise RestoreError(f"cannot read the LPIPS weights file '{path}' ({_detail(exc)}); give a .safetensors file "
                           f"such as {EXAMPLE_WEIGHTS}.") from None


def _detail(exc: BaseException) -> str:
    """A short one-line description of an exception, for a message's parentheses."""
    text = getattr(exc, "strerror", None) or str(getattr(exc, "reason", "") or "") or str(exc)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _torchvision_checkpoint(net: str, download: bool) -> Path:
    """torchvision's ImageNet checkpoint for the backbone in the torch hub cache, downloaded there if possible."""
    try:
        from torchvision import models
    except ImportError as exc:
        raise LPIPSUnavailable(f"no LPIPS weights were given and torchvision cannot be imported ({_detail(exc)}); "
                               f"give {FIX[net]}.") from None

    display, builder = _TV_NAMES[net]
    url = models.get_model_weights(builder).IMAGENET1K_V1.url
    name = os.path.basename(urlparse(url).path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if path.is_file():
        return path
    why = f"no LPIPS weights were given and torchvision's {display} weights are not in the torch cache ({path.parent})"
    if not download:
        raise LPIPSUnavailable(f"{why}; give {FIX[net]}.")
    try:
        _download(url, path)
    except Exception as exc:
        raise LPIPSUnavailable(f"{why} and cannot be downloaded ({_detail(exc)}); give {FIX[net]}.") from None
    return path


def _download(url: str, path: Path) -> None:
    """Fetch ``url`` into ``path`` (sha256 prefix checked, as torchvision does); fails fast when offline."""
    host = urlparse(url).hostname
    socket.create_connection((host, 443), timeout=5).close()  # offline: fails in milliseconds instead of hanging
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name.rsplit(".", 1)[0]
    hash_prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None
    torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)


def _expected(net: str) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The backbone's ``features.*`` shapes (torchvision's layout, the layers LPIPS uses) and the heads' shapes."""
    if net == "alex":
        convs = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]
        chns = (64, 192, 384, 256, 256)
    else:  # VGG16 up to its last conv (index 28): conv+ReLU pairs, a max-pool after each block
        convs, i, cin = [], 0, 3
        for width, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(n):
                convs.append((i, width, cin, 3))
                i, cin = i + 2, width
            i += 1
        chns = (64, 128, 256, 512, 512)
    backbone = {}
    for i, cout, cin, k in convs:
        backbone[f"features.{i}.weight"] = (cout, cin, k, k)
        backbone[f"features.{i}.bias"] = (cout,)
    heads = {f"lin{j}.model.1.weight": (1, c, 1, 1) for j, c in enumerate(chns)}
    return backbone, heads


def _build(net: str, path: "Path | None", device: torch.device, download: bool) -> LPIPSMetric:
    if path is None:
        path = _torchvision_checkpoint(net, download)
        source = f"torchvision cache {path}"
    else:
        source = str(path)

    # every tensor is checked before the network is built (a bad file fails fast) and nothing is left random
    state = _read_state(path)
    backbone, heads = _expected(net)
    _check(state, backbone, path, net, "backbone")
    try:
        import lpips
    except ImportError as exc:
        raise LPIPSUnavailable(f"the 'lpips' package cannot be imported ({_detail(exc)}); install it with "
                               f"pip install lpips.") from None
    if any(k in state for k in heads):  # heads from the file when it has them, else the package's bundled v0.1 heads
        head_path, head_state = path, state
    else:
        head_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        head_state = _read_state(head_path)
    _check(head_state, heads, head_path, net, "LPIPS head")

    with warnings.catch_warnings():  # torchvision's "'pretrained' is deprecated" from inside lpips
        warnings.simplefilter("ignore")
        # pnet_rand=True: the backbone is built without weights, so torchvision downloads nothing; pretrained=False:
        # the heads too (the package would otherwise torch.load its bundled file itself). Both are filled below.
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    # lpips keeps torchvision's layer indices inside its slices: "slice2.3.weight" is "features.3.weight"
    names = {k: f"features.{k.split('.', 1)[1]}" for k in model.net.state_dict()}
    model.net.load_state_dict({k: state[f] for k, f in names.items()}, strict=True)
    for j in range(len(heads)):
        getattr(model, f"lin{j}").model[1].weight.data.copy_(head_state[f"lin{j}.model.1.weight"])

    model.eval().requires_grad_(False)
    return LPIPSMetric(model.to(device), net, source, device)


def _check(state: dict, expected: dict[str, tuple], path: Path, net: str, what: str) -> None:
    """RestoreError naming the file when a key is missing or has the wrong shape."""
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise RestoreError(f"the LPIPS weights file '{path}' lacks the {net} {what} key(s) "
                           f"{', '.join(missing[:3])}{more}; give a file made for LPIPS {net} ({_FILE_HINT[net]}).")
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise RestoreError(f"the LPIPS weights file '{path}' has '{k}' of shape {tuple(state[k].shape)} where "
                               f"LPIPS {net} needs {shape}; give a file made for LPIPS {net} ({_FILE_HINT[net]}).")
