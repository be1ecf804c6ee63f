"""Generic-test configurations for the MRI family (see test_generic.py): each mask pattern, real and complex images,
single and multi-coil, even and odd sizes."""

CASES = [
    dict(id="mri-random", spec="mri-4x", shape=(1, 32, 32), pinv_tol=1e-5),
    dict(id="mri-random-8x", spec="mri-8x", shape=(2, 24, 32), pinv_tol=1e-5),
    dict(id="mri-equi", spec="mri-4x-equi", shape=(2, 24, 32), pinv_tol=1e-5),
    dict(id="mri-equi-odd", spec="mri:accel=4,center=0.1,pattern=equispaced", shape=(1, 23, 31), pinv_tol=1e-5),
    dict(id="mri-vd2d", spec="mri-4x-vd2d", shape=(1, 32, 32), pinv_tol=1e-5),
    dict(id="mri-vd2d-odd", spec="mri:pattern=vd2d,accel=3", shape=(1, 25, 27), pinv_tol=1e-5),
    dict(id="mri-random-complex", spec="mri:accel=4,complex=true", shape=(1, 32, 32), pinv_tol=1e-5),
    dict(id="mri-vd2d-complex", spec="mri:pattern=vd2d,complex=true", shape=(2, 24, 32), pinv_tol=1e-5),
    dict(id="mri-4coil", spec="mri:accel=4,coils=4", shape=(2, 24, 32), pinv_tol=1e-3),
    dict(id="mri-3coil-complex-equi", spec="mri:pattern=equispaced,coils=3,complex=true", shape=(1, 32, 32),
         pinv_tol=1e-3),
    dict(id="mri-8coil-vd2d", spec="mri-4x-8coil:pattern=vd2d", shape=(1, 24, 24), pinv_tol=1e-3),
    # magnitude images of a complex object with a phase map (complex MRI data in restore solve): one coil map
    dict(id="mri-phase", spec="mri:accel=4,phase=true", shape=(1, 24, 32), pinv_tol=1e-3),
]
