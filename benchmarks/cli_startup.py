"""Start-up time of the command line: `restore --help`, `restore list priors` and `restore solve --help`, median of
five runs of the console script (target: under 1 s each; torch is imported only by commands that compute).

    python benchmarks/cli_startup.py
"""

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    exe = shutil.which("restore") or str(Path(sys.executable).with_name("restore"))
    for argv in (["--help"], ["list", "priors"], ["solve", "--help"], ["list", "solvers"]):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([exe, *argv], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        print(f"restore {' '.join(argv):<14} median {statistics.median(times):.2f} s  (min {min(times):.2f})")


if __name__ == "__main__":
    main()
