"""Generic-test configurations for the super-resolution family (see test_generic.py). Both kernels have an exact
pseudo-inverse (full row rank), so the tolerance is float32 round-off. Sizes keep ≥ 300 measured values so that the
generic noise test's sample statistics are stable."""

CASES = [
    dict(id="sr-bicubic-2", spec="sr2", shape=(3, 32, 32), pinv_tol=1e-5),
    dict(id="sr-bicubic-4", spec="sr4", shape=(1, 64, 80), pinv_tol=1e-5),
    dict(id="sr-bicubic-8", spec="sr8", shape=(3, 96, 96), pinv_tol=1e-5),
    dict(id="sr-bicubic-3", spec="sr:factor=3", shape=(1, 48, 60), pinv_tol=1e-5),
    dict(id="sr-average-4", spec="sr4-avg", shape=(3, 48, 48), pinv_tol=1e-5),
    dict(id="sr-average-2", spec="sr:factor=2,kernel=average", shape=(1, 48, 40), pinv_tol=1e-5),
]
