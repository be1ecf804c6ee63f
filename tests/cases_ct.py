"""Generic-test configurations for the CT family (see test_generic.py).

pinv_tol bounds ‖FBP(A r) − r‖/‖r‖ for r = AᵀA x (random x). FBP is only an approximate inverse. Measured: with
circle=false (the default) it reaches 2.9% (180 views, 32×32), 3.5% (the ct-sparse30 preset, 30 views, 32×32) and
8.4% (30 views, 24×24); with circle=true FBP zeroes the corners, where r = AᵀAx is not zero (Aᵀ spreads each ray
through them), which costs 27% (45 or 30 views, 32×32), 30% for limited angle (40 views over 120°) and 36% for 17
views on 25×25. Tolerances are ~1.25–1.4× those figures (deepinv relaxes its FBP pseudo-inverse test to 0.65).
"""

CASES = [
    dict(id="ct-32", spec="ct:views=45,circle=true", shape=(1, 32, 32), pinv_tol=0.36),
    dict(id="ct-2ch-nocircle", spec="ct:views=30,circle=false,filter=hann", shape=(2, 24, 24), pinv_tol=0.12),
    dict(id="ct-full-nocircle", spec="ct:circle=false", shape=(1, 32, 32), pinv_tol=0.04),
    dict(id="ct-limited", spec="ct:views=40,range=120,circle=true", shape=(1, 32, 32), pinv_tol=0.40),
    dict(id="ct-sparse30", spec="ct-sparse30", shape=(1, 32, 32), pinv_tol=0.05),
    dict(id="ct-odd", spec="ct:views=17,filter=shepp-logan,circle=true", shape=(1, 25, 25), pinv_tol=0.45),
]
