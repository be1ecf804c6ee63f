"""Generic-test configurations for the blur family (see test_generic.py): every kernel kind with both boundaries,
small kernels on small images, plus the DPS 61×61 kernels on a 64×64 image.

Pseudo-inverse tolerances: the separable and circular blurs use a truncated SVD (rcond = 1e-3) and the non-separable
reflect blurs damped conjugate gradients, so A⁺A is the identity on the range of Aᴴ only approximately (measured
≤ 3e-5 and ≤ 2e-4 on these cases; the tolerances leave a margin of about 10)."""

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

# a non-separable, non-square, even-sized kernel file (written once per test session)
_DIR = Path(tempfile.mkdtemp(prefix="restore-blur-cases-"))
atexit.register(shutil.rmtree, _DIR, True)
KERNEL_FILE = _DIR / "kernel.npy"
np.save(KERNEL_FILE, np.random.default_rng(0).random((4, 7)) * np.tri(4, 7, 3))

CASES = [
    dict(id="blur-gauss", spec="blur:kind=gaussian,size=9,std=1.5", shape=(3, 32, 32), pinv_tol=1e-3),
    dict(id="blur-gauss-dps", spec="deblur-gauss", shape=(3, 64, 64), pinv_tol=1e-3),
    dict(id="blur-uniform", spec="blur:kind=uniform,size=5", shape=(1, 48, 40), pinv_tol=1e-3),
    dict(id="blur-motion", spec="blur:kind=motion,size=9", shape=(3, 32, 32), pinv_tol=2e-3),
    dict(id="blur-motion-dps", spec="deblur-motion", shape=(1, 64, 64), pinv_tol=2e-3),
    dict(id="blur-file", spec=f"blur:kind=file,file={KERNEL_FILE}", shape=(1, 24, 20), pinv_tol=2e-3),
    dict(id="blur-gauss-circ", spec="blur:kind=gaussian,size=9,std=1.5,boundary=circular", shape=(3, 32, 32),
         pinv_tol=1e-3),
    dict(id="blur-gauss-circ-dps", spec="deblur-gauss-circ", shape=(1, 64, 64), pinv_tol=1e-3),
    dict(id="blur-uniform-circ", spec="blur:kind=uniform,size=5,boundary=circular", shape=(1, 48, 40), pinv_tol=1e-3),
    dict(id="blur-motion-circ", spec="blur:kind=motion,size=9,boundary=circular", shape=(3, 32, 32), pinv_tol=1e-3),
    dict(id="blur-file-circ", spec=f"blur:kind=file,file={KERNEL_FILE},boundary=circular", shape=(1, 24, 20),
         pinv_tol=1e-3),
]
