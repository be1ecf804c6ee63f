"""Generic-test configurations for the mask, denoising and nonlinear families (see test_generic.py)."""

CASES = [
    dict(id="mask-box", spec="mask:kind=box,size=12,margin=4", shape=(3, 32, 32), pinv_tol=1e-6),
    dict(id="mask-box-center", spec="mask:kind=box,size=10,position=center", shape=(1, 24, 40), pinv_tol=1e-6),
    dict(id="mask-random", spec="inpaint-random", shape=(3, 32, 32), pinv_tol=1e-6),
    dict(id="mask-freeform", spec="mask:kind=freeform,strokes=3", shape=(3, 48, 32), pinv_tol=1e-6),
    dict(id="denoise", spec="denoise", shape=(3, 16, 16), pinv_tol=1e-6),
    dict(id="phase", spec="phase-retrieval", shape=(1, 32, 32), pinv_tol=None),
    dict(id="hdr", spec="hdr", shape=(3, 16, 16), pinv_tol=None),
]
