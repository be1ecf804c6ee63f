"""``restore prior ...``: show, verify, fetch and train diffusion priors (the sub-commands of ``restore.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from priors.card import PriorError

from .console import console

prior_app = typer.Typer(no_args_is_help=True, help="Show, verify, fetch and train diffusion priors.")


@prior_app.command("show")
def prior_show(name: str = typer.Argument(..., help="prior name (restore list priors) or checkpoint path")):
    """Print a prior's model card."""
    import json

    import priors

    console.print_json(json.dumps(priors.card_of(name).to_dict()))


@prior_app.command("verify")
def prior_verify(path: Path = typer.Argument(..., help="checkpoint file")):
    """Check a checkpoint file: sha256 against the registry, and an exact (strict) load into its architecture."""
    import priors

    report = priors.verify(path)
    for key, value in report.items():
        console.print(f"[bold]{key}[/]: {value}")
    console.print("[green]ok[/]: the file loads exactly" + (f" and is the {report['matches']}"
                                                            if report["matches"] else ""))


@prior_app.command("fetch")
def prior_fetch(name: str = typer.Argument(..., help="public prior name (restore list priors)")):
    """Download a public checkpoint into the cache (resumable, verified)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    import priors

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console) as bar:
        task = bar.add_task(f"fetching {name}", total=None)
        path = priors.fetch(name, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"saved {path}")


@prior_app.command("train")
def prior_train(
    data: Path = typer.Argument(..., help="folder of training images (searched recursively)"),
    name: str = typer.Option(..., "--name", help="name of the prior (file stem of the outputs)"),
    out: Path = typer.Option(Path("trained_priors"), "--out", help="folder for NAME.safetensors and NAME.json"),
    size: int = typer.Option(64, "--size", help="training resolution"),
    channels: int = typer.Option(3, "--channels", help="3 = RGB, 1 = grey"),
    arch: str = typer.Option("small64", "--arch", help="tiny, cpu64, cpu-conv, small64, small128, or a JSON dict of ADM arguments"),
    crop: str = typer.Option("resize", "--crop", help="resize (whole images) or random (random crops)"),
    steps: int = typer.Option(10000, "--steps", help="total optimisation steps (resumes where it stopped)"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(2e-4, "--lr"),
    lr_schedule: str = typer.Option("constant", "--lr-schedule", help="constant, or cosine (decays to 0 at --steps)"),
    init: str = typer.Option("", "--init", help="fine-tune: start from this prior's weights (a name or a file with "
                             "the same --arch and --channels)"),
    ema: str = typer.Option("0.999", "--ema", help="EMA of the shipped weights: a decay such as 0.999 (until "
                            "step ≈ 9/(1-decay) an average over the run so far), or rel:S, a power-function EMA whose "
                            "average spans the relative length S of the run however long it is (Karras et al. 2024; "
                            "0 < S < 0.28)"),
    precond: str = typer.Option("ddpm", "--precond", help="ddpm (ε-prediction, uniform timesteps) or edm (Karras et "
                                "al. 2022 preconditioning, log-normal noise levels, loss weighting); pixel priors"),
    checkpoint_every: int = typer.Option(250, "--checkpoint-every", help="steps between resumable checkpoints"),
    work_dir: str = typer.Option("", "--work-dir", help="checkpoint folder (default ~/.cache/restore/train/NAME)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    max_images: int = typer.Option(0, "--max-images", help="use only the first N images (0 = all)"),
    domain: str = typer.Option("", "--domain", help="what the images are (model card)"),
    training_data: str = typer.Option("", "--training-data", help="where the data comes from (model card)"),
    licence: str = typer.Option("", "--licence", help="licence of the data (model card)"),
    value_map: str = typer.Option("", "--value-map", help="'hu:LO,HI' for 16-bit CT stored as HU+1024"),
    load_size: int = typer.Option(0, "--load-size", help="resize every image to N×N on loading, before --crop "
                                  "(e.g. 512² CT slices → 128² for 64² random crops); 0 keeps the stored size"),
    seed: int = typer.Option(0, "--seed"),
    latent: bool = typer.Option(False, "--latent", help="train a latent prior: an autoencoder (unless "
                                "--autoencoder is given), then the UNet on its latents"),
    autoencoder: Optional[Path] = typer.Option(None, "--autoencoder", help="--latent: a trained autoencoder"),
    autoencoder_steps: int = typer.Option(20000, "--autoencoder-steps", help="--latent: autoencoder steps"),
    autoencoder_lr_schedule: str = typer.Option("constant", "--autoencoder-lr-schedule", help="--latent: constant "
                                                "or cosine (decays to 0 at --autoencoder-steps)"),
    autoencoder_arch: str = typer.Option("", "--autoencoder-arch", help="--latent: JSON dict of autoencoder "
                                         "arguments, e.g. '{\"base_channels\": 32, \"num_res_blocks\": 1}'"),
):
    """Train an ADM prior on a folder of images (EMA, resumable checkpoints, fp16 safetensors output); with
    --latent, a small KL autoencoder and an ADM UNet on its latents."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from priors.train import ARCHITECTURES, TrainConfig, parse_ema, train

    if steps < 1 or batch_size < 1 or lr <= 0 or checkpoint_every < 1:
        raise PriorError("--steps, --batch-size and --checkpoint-every must be at least 1 and --lr positive; got "
                         f"steps {steps}, batch size {batch_size}, checkpoint every {checkpoint_every}, lr {lr:g}.")
    ema = parse_ema(ema)
    if crop not in ("resize", "random"):
        raise PriorError(f"--crop must be resize or random, got '{crop}'.")
    if lr_schedule not in ("constant", "cosine"):
        raise PriorError(f"--lr-schedule must be constant or cosine, got '{lr_schedule}'.")
    if autoencoder_lr_schedule not in ("constant", "cosine"):
        raise PriorError(f"--autoencoder-lr-schedule must be constant or cosine, got '{autoencoder_lr_schedule}'.")
    if precond not in ("ddpm", "edm"):
        raise PriorError(f"--precond must be ddpm or edm, got '{precond}'.")
    if precond == "edm" and latent:
        raise PriorError("--precond edm is for pixel priors; train latent priors with --precond ddpm.")
    if arch not in ARCHITECTURES and not arch.strip().startswith("{"):
        raise PriorError(f"unknown --arch '{arch}'; use one of {', '.join(ARCHITECTURES)} or a JSON dict.")
    if not data.is_dir():
        raise PriorError(f"the training folder '{data}' does not exist; check the path.")
    try:
        ae_config = json.loads(autoencoder_arch) if autoencoder_arch.strip() else None
    except json.JSONDecodeError as e:
        raise PriorError(f"--autoencoder-arch is not valid JSON ({e.msg}); give a dict such as "
                         f"'{{\"base_channels\": 32}}'.") from None
    if load_size and load_size < size:
        raise PriorError(f"--load-size {load_size} is smaller than the training --size {size}; use 0 or at least "
                         f"{size}.")
    cfg = TrainConfig(data=str(data), name=name, out=str(out), size=size, channels=channels, arch=arch, crop=crop,
                      steps=steps, batch_size=batch_size, lr=lr, ema=ema, checkpoint_every=checkpoint_every,
                      work_dir=work_dir, device=device, max_images=max_images, domain=domain,
                      training_data=training_data, licence=licence, value_map=value_map, seed=seed,
                      load_size=load_size, lr_schedule=lr_schedule, init=init, precond=precond)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  "{task.fields[info]}", TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(f"training {name}", total=steps, info="")

        def on_step(step, loss, rate):
            bar.update(task, completed=step, info=f"loss {loss:.4f}  {rate:.1f} img/s")

        if latent:
            from priors.latent_train import train_autoencoder, train_latent_prior

            if autoencoder is None:
                ae_task = bar.add_task(f"autoencoder for {name}", total=autoencoder_steps, info="")
                autoencoder, _ = train_autoencoder(
                    data, out, steps=autoencoder_steps, batch_size=batch_size, device=device, name=f"{name}-ae",
                    size=size, channels=channels, crop=crop, seed=seed, max_images=max_images, value_map=value_map,
                    config=ae_config, lr_schedule=autoencoder_lr_schedule,
                    work_dir=str(Path(work_dir) / "autoencoder") if work_dir else "",
                    log=lambda m: bar.console.print(m),
                    on_step=lambda step, loss, rate: bar.update(ae_task, completed=step,
                                                                info=f"loss {loss:.4f}  {rate:.1f} img/s"))
            weights, card = train_latent_prior(cfg, autoencoder, log=lambda m: bar.console.print(m), on_step=on_step)
        else:
            weights, card = train(cfg, log=lambda m: bar.console.print(m), on_step=on_step)
    console.print(f"wrote {weights} and {card}")
