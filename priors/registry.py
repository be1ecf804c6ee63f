"""Priors by name: the embedded ones (shipped in ``priors/embedded``), the public checkpoints the papers use (downloaded
only on request into a cache folder), local files, and diffusers folders.

``resolve(NAME_OR_PATH)`` gives a ready ``DiffusionPrior``. Nothing downloads silently: a public checkpoint that is
not in the cache is an error that says how to fetch it (``restore prior fetch NAME``) or to point at a local copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .card import PriorCard, PriorError, sha256_file

if TYPE_CHECKING:
    from .base import DiffusionPrior

# torch-heavy pieces (the ADM configurations and the loader) are imported where a prior is loaded, so that listing
# and showing cards stays fast

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def cache_dir() -> Path:
    """Where fetched checkpoints live: $RESTORE_CACHE/priors or ~/.cache/restore/priors."""
    root = os.environ.get("RESTORE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "restore") / "priors"


@dataclasses.dataclass(frozen=True)
class PublicCheckpoint:
    name: str
    filename: str
    url: str
    config: str                 # key of priors.configs.ADM_CONFIGS
    approx_bytes: int           # float32 parameters × 4, for the progress bar and a sanity check
    domain: str
    training_data: str
    licence: str
    used_by: str
    note: str = ""
    sha256: str = ""            # not published by the authors: recorded at the first fetch (see fetch)

    image_size: int = 256
    channels: int = 3
    learned_variance: bool = True

    def card(self) -> PriorCard:
        from .configs import ADM_CONFIGS

        cfg = ADM_CONFIGS[self.config]
        return PriorCard(name=self.name, image_size=cfg.image_size, channels=cfg.in_channels, domain=self.domain,
                         learned_variance=cfg.learn_sigma, training_data=self.training_data, licence=self.licence,
                         sha256=self.sha256, architecture={"kind": "adm", **cfg.to_dict()},
                         extra={"url": self.url, "file": self.filename, "used_by": self.used_by, "note": self.note})


PUBLIC: dict[str, PublicCheckpoint] = {
    "ffhq-256": PublicCheckpoint(
        name="ffhq-256", filename="ffhq_10m.pt",
        url="https://drive.google.com/uc?export=download&id=1BGwhRWUoguF-D8wlZ65tf227gp3cDUDh",
        config="ffhq_10m", approx_bytes=93_563_910 * 4, domain="faces (FFHQ 256×256)",
        training_data="FFHQ, 49k images (the first 1k are the DPS validation set)", licence="FFHQ: CC BY-NC-SA 4.0",
        used_by="DPS, DAPS, RED-Diff",
        note="hosted on Google Drive (DPS README, folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh); if the download "
             "returns a web page, download it in a browser and pass --prior /path/to/ffhq_10m.pt"),
    "imagenet-256": PublicCheckpoint(
        name="imagenet-256", filename="256x256_diffusion_uncond.pt",
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        config="256x256_diffusion_uncond", approx_bytes=552_814_086 * 4, domain="ImageNet 256×256, unconditional",
        training_data="ImageNet-1k train", licence="MIT (openai/guided-diffusion)",
        used_by="DPS, DDNM, DAPS, RED-Diff"),
}


def embedded_cards() -> dict[str, tuple[PriorCard, Path]]:
    out = {}
    for card_path in sorted(EMBEDDED_DIR.glob("*.json")):
        card = PriorCard.from_dict(json.loads(card_path.read_text()))
        out[card.name] = (card, card_path.with_suffix(".safetensors"))
    return out


def list_priors() -> list[dict]:
    """One row per known prior: name, kind, where, whether it is available here, card."""
    rows = []
    for name, (card, path) in embedded_cards().items():
        rows.append(dict(name=name, kind="embedded", location=str(path), available=path.is_file(), card=card))
    for name, pub in PUBLIC.items():
        path = cache_dir() / pub.filename
        light = PriorCard(name=name, image_size=pub.image_size, channels=pub.channels, domain=pub.domain,
                          learned_variance=pub.learned_variance, training_data=pub.training_data, licence=pub.licence)
        rows.append(dict(name=name, kind="public", location=str(path) if path.is_file() else pub.url,
                         available=path.is_file(), card=light))
    return rows


def known_names() -> list[str]:
    return sorted(set(embedded_cards()) | set(PUBLIC))


def card_of(name: str) -> PriorCard:
    embedded = embedded_cards()
    if name in embedded:
        return embedded[name][0]
    if name in PUBLIC:
        return PUBLIC[name].card()
    if Path(name).expanduser().exists():  # a checkpoint file or diffusers folder: its card as it loads
        return resolve(name).card
    raise PriorError(f"unknown prior '{name}'; use one of {', '.join(known_names())} or a path to a checkpoint "
                     f"('restore list priors' shows them).")


def resolve(name_or_path: str, device: str = "cpu") -> "DiffusionPrior":
    """A DiffusionPrior from an embedded or public name, a checkpoint file, or a diffusers folder."""
    from .configs import ADM_CONFIGS
    from .load import load_prior_file

    embedded = embedded_cards()
    if name_or_path in embedded:
        card, path = embedded[name_or_path]
        if not path.is_file():
            raise PriorError(f"the embedded prior '{name_or_path}' has a model card but no weights at {path}; "
                             f"reinstall restore.")
        return load_prior_file(path, card=card, verify_hash=card.sha256).to(device)
    if name_or_path in PUBLIC:
        pub = PUBLIC[name_or_path]
        path = cache_dir() / pub.filename
        if not path.is_file():
            raise PriorError(f"the public prior '{pub.name}' is not downloaded; run 'restore prior fetch {pub.name}' "
                             f"on a connected machine (it fetches {pub.url} into {cache_dir()}), or pass --prior "
                             f"/path/to/{pub.filename}.")
        recorded = _recorded_hash(path)
        return load_prior_file(path, config=ADM_CONFIGS[pub.config], card=pub.card(), verify_hash=recorded).to(device)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        try:
            from .diffusers_prior import load_diffusers  # optional extra
        except ImportError:
            raise PriorError(f"'{path}' is a folder: diffusers folders need the optional extra; install it with "
                             f"pip install 'restore[diffusers]'.") from None
        return load_diffusers(path).to(device)
    if path.is_file():
        return load_prior_file(path).to(device)
    raise PriorError(f"unknown prior '{name_or_path}'; use one of {', '.join(known_names())} or a path to a "
                     f"checkpoint ('restore list priors' shows them).")


def _recorded_hash(path: Path) -> str:
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.read_text().split()[0] if sidecar.is_file() else ""


def fetch(name: str, progress: Callable[[int, int], None] | None = None, timeout: float = 30.0) -> Path:
    """Download a public checkpoint into the cache (resumable, verified), or say clearly why it cannot be."""
    from .configs import ADM_CONFIGS
    from .load import load_prior_file
    import http.client
    import urllib.error
    import urllib.request

    if name not in PUBLIC:
        if name in embedded_cards():
            raise PriorError(f"'{name}' is embedded in restore and needs no download.")
        raise PriorError(f"unknown public prior '{name}'; use one of {', '.join(PUBLIC)}.")
    pub = PUBLIC[name]
    target = cache_dir() / pub.filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(pub.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise PriorError(f"cannot download {pub.url} ({getattr(exc, 'reason', exc)}); on a machine without internet "
                         f"copy {pub.filename} from elsewhere and pass --prior /path/to/{pub.filename} (or put it in "
                         f"{cache_dir()}).") from None
    with response:
        if "text/html" in (response.headers.get("Content-Type") or ""):
            why = pub.note or "a login or confirmation page"
            raise PriorError(f"{pub.url} answered with a web page instead of the file ({why}); download "
                             f"{pub.filename} in a browser and pass --prior PATH.")
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        total = have + int(response.headers.get("Content-Length") or 0) or pub.approx_bytes
        with open(part, "ab" if have else "wb") as f:
            done = have
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            except (OSError, http.client.HTTPException) as exc:
                raise PriorError(f"the download of {pub.filename} was interrupted at {done} bytes ({exc}); run "
                                 f"'restore prior fetch {name}' again to resume from there.") from None
    if part.stat().st_size < 0.9 * pub.approx_bytes:
        raise PriorError(f"the download of {pub.filename} stopped at {part.stat().st_size} bytes (expected about "
                         f"{pub.approx_bytes}); run 'restore prior fetch {name}' again to resume.")
    load_prior_file(part, config=ADM_CONFIGS[pub.config])  # refuses a file that is not this architecture
    os.replace(part, target)
    digest = sha256_file(target)
    if pub.sha256 and digest != pub.sha256:
        target.unlink()
        raise PriorError(f"{pub.filename} has sha256 {digest} instead of {pub.sha256}; it was removed: fetch again.")
    target.with_name(target.name + ".sha256").write_text(digest + "\n")
    return target


def verify(path: "str | Path") -> dict:
    """Check a checkpoint: its hash against the registry, and that it loads exactly into its architecture."""
    from .configs import ADM_CONFIGS
    from .load import load_prior_file

    path = Path(path)
    if not path.is_file():
        raise PriorError(f"the file '{path}' does not exist; check the path.")
    digest = sha256_file(path)
    report = dict(path=str(path), bytes=path.stat().st_size, sha256=digest, matches=None, architecture="")
    for name, (card, weights) in embedded_cards().items():
        if card.sha256 == digest:
            report["matches"] = f"embedded prior '{name}'"
    for name, pub in PUBLIC.items():
        if path.name == pub.filename or (pub.sha256 and pub.sha256 == digest):
            if pub.sha256 and pub.sha256 != digest:
                raise PriorError(f"'{path}' is named like the public '{name}' checkpoint but its sha256 differs; "
                                 f"it is damaged or another file: fetch it again.")
            load_prior_file(path, config=ADM_CONFIGS[pub.config])
            report["matches"] = f"public prior '{name}' (architecture {pub.config}, loaded strictly)"
            report["architecture"] = pub.config
            return report
    prior = load_prior_file(path)
    report["architecture"] = json.dumps(prior.card.architecture)
    return report
