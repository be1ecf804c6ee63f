"""The ``restore`` command line (typer + rich). Each command is a thin layer over functions usable from Python.

User mistakes end in one sentence naming the problem and the fix, exit code 2, and no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

import operators
from operators import OperatorError

from .io import RestoreError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Image restoration and inverse problems with diffusion priors.")
list_app = typer.Typer(no_args_is_help=True, help="List operators and presets.")
app.add_typer(list_app, name="list")

console = Console()
err_console = Console(stderr=True)


@app.command()
def degrade(
    images: List[str] = typer.Argument(..., help="clean images or folders (searched recursively)"),
    operator: str = typer.Option(..., "--operator", "-o", help="operator spec or preset, e.g. sr4 or 'sr:factor=4'"),
    noise: str = typer.Option("0", "--noise", "-n", help="noise σ on the [0, 1] scale (e.g. 0.025), "
                                                        "'poisson:RATE' or 'none'"),
    seed: int = typer.Option(0, "--seed", help="base seed; each image's seed is derived from it and its name"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace measurement files that exist"),
):
    """Make measurement files (.npz) and preview PNGs from clean images."""
    from .degrade import degrade_files

    rows = degrade_files(images, operator, noise, seed, out, overwrite=overwrite)
    table = Table(title=f"measurements with {operators.parse(operator)}")
    for col in ("image", "measurement", "shape", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["image"]), str(r["measurement"]), "×".join(map(str, r["shape"])), r["status"])
    console.print(table)


@list_app.command("operators")
def list_operators():
    """Operator families with their parameters and defaults."""
    table = Table(title="operator families (spec: family:key=value,...)")
    table.add_column("family", style="bold")
    table.add_column("parameters (default)")
    table.add_column("what it is")
    for name, cls in sorted(operators.OPERATORS.items()):
        params = ", ".join(f"{k}={v.default!r}" if v.type is not str else f"{k}={v.default}"
                           for k, v in cls.params.items()) or "-"
        table.add_row(name, params, cls.description)
    console.print(table)


@list_app.command("presets")
def list_presets():
    """Named operator presets (the papers' settings)."""
    table = Table(title="operator presets")
    table.add_column("preset", style="bold")
    table.add_column("spec")
    table.add_column("what it reproduces")
    for name, (spec, description) in sorted(operators.PRESETS.items()):
        table.add_row(name, spec, description)
    console.print(table)


@app.command()
def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="output folder")):
    """Degrade the shipped sample images with several operators and restore them (pseudo-inverse baseline)."""
    from .demo import run_demo

    run_demo(out, console)


def main(argv: Optional[list] = None) -> int:
    """Entry point: run the app, turning user errors into one clear sentence and exit code 2."""
    try:
        app(args=argv, prog_name="restore")  # standalone mode: usage errors exit 2 with typer's message
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (RestoreError, OperatorError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished outputs are kept, unfinished ones were not written.")
        return 130
    return 0


def _entry() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":
    _entry()
