"""``benchmarks/solvers.py`` in parts (see its docstring): presets, timing, quality, scale, tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # restore, operators, priors
