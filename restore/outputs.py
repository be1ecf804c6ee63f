"""Where outputs go, and the rules that keep a user's files safe.

* ``restore`` never writes over a file it did not create, and never over an input of the current run, whatever the
  flags: ``--overwrite`` only redoes restore's own outputs, recognised by their sidecars (a restored image by its
  ``.json`` sidecar, a measurement ``.npz`` by the format tag inside it). Every target is checked before any work.
* Two inputs never share an output: ``a.png`` and ``a.jpg`` in one folder become ``a.png.png`` and ``a.jpg.png``
  (the source extension kept in the stem) instead of both writing ``a.png``.
* The output tree is never read as input: when ``--out`` lies inside an input folder it is left out of the folder
  walk, and a file that carries a restore sidecar (an earlier run's output) is never taken as an input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import RestoreError

#: the format tag of measurement files (``restore degrade``'s .npz), by which restore recognises its own
MEASUREMENT_FORMAT = "restore-measurement/1"

#: the key every sidecar written by this version carries (older sidecars are recognised by their keys)
SIDECAR_MARK = "written_by"
SIDECAR_MARK_VALUE = "restore"


def output_names(rels: list[Path], suffix: str) -> list[Path]:
    """Relative output paths (with ``suffix``) for input paths relative to their roots; inputs that would share one
    (``a.png`` and ``a.jpg``) keep their source extension in the stem (``a.png.png``, ``a.jpg.png``)."""
    plain = [rel.with_suffix(suffix) for rel in rels]
    counts: dict[str, int] = {}
    for p in plain:
        counts[p.as_posix().lower()] = counts.get(p.as_posix().lower(), 0) + 1
    names = [rel.with_name(rel.name + suffix) if counts[p.as_posix().lower()] > 1 else p
             for rel, p in zip(rels, plain)]
    seen: dict[str, Path] = {}
    for rel, name in zip(rels, names):
        key = name.as_posix().lower()
        if key in seen:
            raise RestoreError(f"the inputs '{seen[key]}' and '{rel}' would both be written to '{name}'; rename one "
                               f"of them.")
        seen[key] = rel
    return names


def is_restore_sidecar(path: Path) -> bool:
    """A JSON file written by ``restore solve`` (or bench) as an output's sidecar."""
    try:
        if not path.is_file() or path.stat().st_size > 10_000_000:
            return False
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get(SIDECAR_MARK) == SIDECAR_MARK_VALUE or {"solver", "operator", "output", "cost"} <= set(data)


def is_restore_measurement(path: Path) -> bool:
    try:
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return json.loads(bytes(z["meta"]).decode()).get("format") == MEASUREMENT_FORMAT
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def carries_sidecar(path: Path) -> bool:
    """True for an earlier run's restored image (its sidecar names it as the output)."""
    side = path.with_suffix(".json")
    if path.suffix.lower() == ".json" or not side.is_file() or not is_restore_sidecar(side):
        return False
    try:
        return Path(json.loads(side.read_text()).get("output", "")).name == path.name
    except (OSError, ValueError):
        return False


def _file_id(p: Path) -> "tuple[int, int] | None":
    """(device, inode) of an existing file: the same file under another name has the same id."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputGuard:
    """Checks planned output files against this run's inputs and against files restore did not create."""

    def __init__(self, inputs: "list[Path]"):
        self.inputs = [Path(p) for p in inputs]
        self._resolved = {_resolve(p) for p in self.inputs}
        self._ids = {i for i in map(_file_id, self.inputs) if i is not None}  # hard links, case-folding disks

    def check(self, path: Path, owned: bool) -> None:
        """Refuse ``path`` if it is an input of this run, or exists and is not restore's own (``owned``)."""
        path = Path(path)
        if _resolve(path) in self._resolved or _file_id(path) in self._ids:
            raise RestoreError(f"'{path}' is an input of this run and restore never writes over its inputs; choose "
                               f"another --out (e.g. --out restored/).")
        if path.exists() and not path.is_dir() and not owned:
            raise RestoreError(f"'{path}' exists and was not written by restore, so it is left as it is; choose "
                               f"another --out or move that file away.")


def _resolve(p: Path) -> str:
    try:
        return str(Path(p).resolve())
    except OSError:
        return str(Path(p).absolute())


def inside(path: Path, root: Path) -> bool:
    """``path`` lies strictly inside ``root`` (both resolved)."""
    try:
        p, r = Path(path).resolve(), Path(root).resolve()
    except OSError:
        return False
    return p != r and r in p.parents
