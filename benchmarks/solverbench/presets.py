"""The solver benchmark's vocabulary: tasks, solver labels and their fast/paper presets, the preset table in the
docs, and the evenly spread image subset."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import operators
from restore.io import find_images
from restore.solvers import SOLVERS, get_solver


ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RESTORE_SHARED_DATA") or ROOT.parent / "shared" / "data")


#: task name → (operator spec, what it is). Names other than these may be any operator preset (``restore list
#: presets``); ``--task-spec NAME=SPEC`` adds others.
TASKS: dict[str, tuple[str, str]] = {
    "sr4": ("sr:factor=4,kernel=bicubic", "×4 super-resolution, MATLAB-style antialiased bicubic (DPS/DAPS Resizer); "
                                          "64×64 → 16×16"),
    "inpaint-box": ("mask:kind=box,size=32,margin=8",
                    "a 32×32 hole at a seeded random position at least 8 px from the border: DPS/DAPS's 128×128 hole "
                    "in a 256×256 image (half the side) with DAPS's margin 32, scaled to 64×64 (the operator preset "
                    "inpaint-box, 128×128, does not fit 64×64)"),
    "inpaint-random": ("mask:kind=random,fraction=0.7",
                       "random inpainting, 70% of the pixels missing (DAPS, ReSample)"),
    "deblur-gauss": ("blur:kind=gaussian,size=61,std=3.0",
                     "the DPS/DAPS Gaussian kernel (61×61, σ = 3 px, reflect boundary) unchanged in pixels: on 64×64 "
                     "faces it removes far more of the face than on 256×256 ones"),
    "deblur-motion": ("blur:kind=motion,size=61,intensity=0.5",
                      "the DPS/DAPS motion kernel (61×61, intensity 0.5, one seeded kernel per image), unchanged in "
                      "pixels"),
    "mri-4x": ("mri:accel=4,center=0.08,pattern=random", "single-coil MRI, 4× random columns, 8% centre (fastMRI)"),
    "mri-8x": ("mri:accel=8,center=0.04,pattern=random", "single-coil MRI, 8× random columns, 4% centre (fastMRI)"),
    "ct-sparse60": ("ct:views=60", "sparse-view parallel-beam CT, 60 views over 180°"),
}


DEFAULT_TASKS = ["sr4", "inpaint-box", "inpaint-random", "deblur-gauss", "deblur-motion"]


PIXEL_SOLVERS = ["dps", "ddnm", "daps", "reddiff"]


#: labels of the solvers that run on the latent prior → the solver they run
LATENT_LABELS = {"resample": "resample", "latent-daps": "daps"}


#: the "fast" choice per solver label (None: the solver's own choice for the task, here LatentDAPS-100)
FAST = {"dps": "fast", "ddnm": "default", "daps": "daps-100", "reddiff": "fast", "resample": "fast",
        "latent-daps": None}


#: solvers that backpropagate through the network: "all" its evaluations, or "guided" (ReSample's DDIM steps)
BACKPROP = {"dps": "all", "resample": "guided"}


OVERHEAD_TARGET = 1.10


BEGIN = "<!-- BEGIN solver benchmark results: written by benchmarks/solvers.py --markdown; do not edit by hand -->"


END = "<!-- END solver benchmark results -->"


PRESETS_BEGIN = "<!-- BEGIN preset table: written by benchmarks/solvers.py from the solver classes; do not edit by hand -->"


PRESETS_END = "<!-- END preset table -->"


#: the parameters the preset table quotes for each solver (their values always come from the solver classes)
HEADLINE = {
    "dps": ("steps", "scale"),
    "ddnm": ("steps", "eta", "sigma_y"),
    "daps": ("annealing_steps", "ode_steps", "mcmc", "mcmc_steps", "lr", "momentum", "likelihood", "tau"),
    "reddiff": ("steps", "lr", "grad_term_weight"),
    "resample": ("steps", "pixel_iters", "latent_iters", "noise_stop"),
}


# ---------------------------------------------------------------------------------------------------------------------
# options


def split_list(text: str) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def solver_of(label: str) -> str:
    return LATENT_LABELS.get(label, label)


def parse_presets(text: str) -> dict[str, str | None]:
    """``fast`` / ``paper`` / ``SOLVER=PRESET`` items → {solver label: preset, or None for the paper (task) choice}.
    Labels not mentioned get None (paper)."""
    chosen: dict[str, str | None] = {label: None for label in FAST}
    for item in split_list(text):
        if "=" not in item:
            if item == "fast":
                chosen.update(FAST)
            elif item == "paper":
                chosen = {label: None for label in FAST}
            else:
                raise SystemExit(f"--presets: '{item}' is neither fast, paper nor SOLVER=PRESET.")
            continue
        label, preset = (s.strip() for s in item.split("=", 1))
        if label not in FAST:
            raise SystemExit(f"--presets: unknown solver '{label}'; use one of {', '.join(FAST)}.")
        if preset == "fast":
            chosen[label] = FAST[label]
        elif preset in ("paper", "auto", ""):
            chosen[label] = None
        else:
            known = SOLVERS[solver_of(label)].presets
            if preset not in known:
                raise SystemExit(f"--presets: solver '{solver_of(label)}' has no preset '{preset}'; its presets are: "
                                 f"{', '.join(sorted(known))}.")
            chosen[label] = preset
    return chosen


def _shown_value(solver: str, key: str, value) -> str:
    if solver == "ddnm" and key == "sigma_y" and value < 0:
        return "the measurement's"
    return f"{value:g}" if isinstance(value, float) else str(value)


@functools.lru_cache(maxsize=None)
def _face_op(task: str):
    """The operator of a face task at 64×64 (one seeded parameter set): what a preset is chosen for."""
    return operators.build(task_spec(task, {}), (3, 64, 64), seeds=[0])


def preset_cell(label: str, preset: str | None, tasks: list[str] | None = None) -> str:
    """What a solver label runs on the face tasks with ``preset`` (None: the preset ``restore solve`` picks for each
    task): the preset name(s) and the HEADLINE parameters as the solver will use them (``params_for``: DAPS-100/1K
    take the task's official Langevin settings); a value that differs between tasks is listed per task."""
    import types

    name = solver_of(label)
    prior = types.SimpleNamespace(card=types.SimpleNamespace(latent=label in LATENT_LABELS))
    tasks = tasks or DEFAULT_TASKS
    chosen, shown = {}, {}
    for task in tasks:
        op = _face_op(task)
        chosen[task] = preset or get_solver(name).auto_preset(op, prior) or ""
        params = get_solver(name, preset=chosen[task] or None).params_for(op, prior)
        shown[task] = {k: _shown_value(name, k, params[k]) for k in HEADLINE[name]
                       if k in params and (k != "momentum" or params.get("mcmc") == "hmc")}
    names = sorted({p for task, p in chosen.items() if p not in (task, f"latent-{task}")})
    head = "/".join(f"`{p}`" for p in names) if names else "the task's preset"
    keys = list(dict.fromkeys(k for task in tasks for k in shown[task]))
    same = [k for k in keys if len({shown[task].get(k) for task in tasks}) == 1]
    parts = [", ".join(f"{k}={shown[tasks[0]][k]}" for k in same)]
    for k in keys:
        if k not in same:
            by_value: dict[str, list[str]] = {}
            for task in tasks:
                by_value.setdefault(shown[task].get(k, "–"), []).append(task)
            parts.append(f"{k}: " + ", ".join(f"{v} ({', '.join(ts)})" for v, ts in by_value.items()))
    return f"{head}: " + "; ".join(p for p in parts if p)


def presets_markdown() -> str:
    """The preset table of docs/benchmarks.md and docs/benchmarks-paper.md, from the solver classes' presets."""
    lines = ["| solver | fast (`--presets fast`) | paper (`--presets paper`: what `restore solve` picks for the task) |",
             "|---|---|---|"]
    for label, fast in FAST.items():
        shown = "latent DAPS" if label == "latent-daps" else label
        lines.append(f"| {shown} | {preset_cell(label, fast)} | {preset_cell(label, None)} |")
    return "\n".join(lines) + "\n"


def update_presets(path: Path, text: str | None = None) -> bool:
    """Replace the preset table between its markers in ``path``; False when the file has no markers."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if not (PRESETS_BEGIN in old and PRESETS_END in old and old.index(PRESETS_BEGIN) < old.index(PRESETS_END)):
        return False
    block = f"{PRESETS_BEGIN}\n\n{text or presets_markdown()}\n{PRESETS_END}"
    new = old[:old.index(PRESETS_BEGIN)] + block + old[old.index(PRESETS_END) + len(PRESETS_END):]
    if new != old:
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(new)
        os.replace(tmp, path)
    return True


def task_spec(name: str, extra: dict[str, str]) -> str:
    if name in extra:
        return str(operators.parse(extra[name]))
    if name in TASKS:
        return TASKS[name][0]
    if name in operators.PRESETS:
        return str(operators.parse(name))
    raise SystemExit(f"unknown task '{name}'; use one of {', '.join(TASKS)}, an operator preset ('restore list "
                     f"presets'), or define it with --task-spec NAME=SPEC.")


def select_images(folder: Path, limit: int) -> list[Path]:
    """``limit`` images at evenly spaced positions of the folder's sorted file list (all of them for limit 0):
    a fixed subset that spans the folder rather than its first files."""
    files = [p for p, _ in find_images([str(folder)]) if p.suffix.lower() != ".npz"]
    if limit and limit < len(files):
        files = [files[i * len(files) // limit] for i in range(limit)]
    return files
