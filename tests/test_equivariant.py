"""--equivariant: the prior's network averaged over symmetries of the pixel grid (``priors.base.SYMMETRIES``).

References: the group property itself (an averaged network commutes with every element), deepinv's
``EquivariantDenoiser`` (Terris et al., CVPR 2024) for the average, and the Gaussian prior, whose isotropic stationary
covariance makes the exact MMSE denoiser (the Wiener filter) equivariant already, so averaging must not change it."""

import json

import pytest
import torch

import priors
from priors.base import SYMMETRIES, symmetry_index, transform
from priors.gaussian import GaussianPrior
from restore.acceleration import Acceleration, prepare
from restore.cli import main
from restore.errors import RestoreError
from restore.io import save_image
from tests.test_priors import tiny_prior

CPU = torch.device("cpu")


def _set(prior, group, mode="mean"):
    prior.symmetries = SYMMETRIES[group] if group else None
    prior.symmetry_mode = mode
    return prior


@pytest.mark.parametrize("group", sorted(SYMMETRIES))
def test_elements_are_a_group_with_their_inverses(group):
    x = torch.randn(2, 3, 5, 5)
    images = {g: transform(x, g) for g in SYMMETRIES[group]}
    assert len({tuple(v.flatten().tolist()) for v in images.values()}) == len(SYMMETRIES[group])  # all distinct
    for g, gx in images.items():
        assert torch.equal(transform(gx, g, inverse=True), x)
        for h in SYMMETRIES[group]:  # closed under composition
            assert any(torch.equal(transform(gx, h), v) for v in images.values())


@pytest.mark.parametrize("group", sorted(SYMMETRIES))
def test_the_mean_commutes_with_every_symmetry_and_equals_deepinvs_equivariant_denoiser(group):
    deepinv = pytest.importorskip("deepinv")
    from deepinv.transform import Reflect, Rotate

    plain = tiny_prior()
    prior = _set(tiny_prior(), group)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out = prior.denoise(x, sigma)
        for g in SYMMETRIES[group]:  # D(g·x) = g·D(x), where the plain network is not equivariant
            torch.testing.assert_close(prior.denoise(transform(x, g), sigma), transform(out, g), atol=1e-5, rtol=1e-5)
        g = SYMMETRIES[group][-1]
        assert (plain.denoise(transform(x, g), sigma) - transform(plain.denoise(x, sigma), g)).abs().max() > 1e-3
        reflect = Reflect(n_trans=2, dim=[-1])
        t = reflect if group == "flips" else Rotate(n_trans=4, multiples=90, positive=True) * reflect
        ref = deepinv.models.EquivariantDenoiser(lambda z, s: plain.denoise(z, s), transform=t, random=False)(x, 0.5)
        torch.testing.assert_close(prior.denoise(x, 0.5), ref, atol=1e-5, rtol=1e-5)
    assert prior.evaluations == len(SYMMETRIES[group]) + 2  # one per call, however many symmetries


def test_averaging_leaves_the_gaussian_priors_exact_denoiser_unchanged():
    prior = _set(GaussianPrior((3, 12, 12), mean=0.1, alpha=2.0, scale=0.5), "dihedral")
    g = torch.Generator().manual_seed(0)
    x = prior.sample(2, g) + 0.2 * torch.randn((2, 3, 12, 12), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, 0.2), prior.wiener(x, 0.2), atol=2e-6, rtol=1e-5)


def test_one_symmetry_per_step_is_chosen_by_the_timestep_image_by_image():
    plain, prior = tiny_prior(), _set(tiny_prior(), "dihedral", "step")
    group = SYMMETRIES["dihedral"]
    picks = {symmetry_index(t, len(group)) for t in range(0, 1000, 10)}
    assert picks == set(range(len(group)))  # a solver's 100 steps visit every symmetry
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    ts = torch.tensor([990.0, 500.0, 12.0])
    with torch.no_grad():
        eps, v = prior.model_output(x, ts)
        for b, t in enumerate(ts.tolist()):  # each image as if alone: g⁻¹·net(g·x) for its own g
            g = group[symmetry_index(t, len(group))]
            e1, v1 = plain.model_output(transform(x[b:b + 1], g), ts[b:b + 1])
            torch.testing.assert_close(eps[b:b + 1], transform(e1, g, inverse=True), atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(v[b:b + 1], transform(v1, g, inverse=True), atol=1e-6, rtol=1e-6)
    assert prior.evaluations == 1


def test_settings_are_checked_refused_for_latent_priors_and_recorded(tmp_path, capsys):
    for bad in ("rotations", "dihedral:all", "off:step"):
        with pytest.raises(RestoreError, match="--equivariant must be off, flips, dihedral"):
            Acceleration(equivariant=bad).check()
    latent = priors.resolve("faces64-latent")
    with pytest.raises(RestoreError, match="latent prior.*--equivariant off"):
        prepare(latent, CPU, Acceleration(equivariant="flips"))
    natural = priors.resolve("natural")
    assert prepare(natural, CPU, Acceleration(equivariant="dihedral:step"))["equivariant"] == "dihedral:step"
    assert natural.symmetries == SYMMETRIES["dihedral"] and natural.symmetry_mode == "step"
    assert "equivariant" not in prepare(natural, CPU, Acceleration()) and natural.symmetries is None

    img = tmp_path / "in.png"
    save_image(img, torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)))
    common = ["solve", str(img), "--operator", "sr:factor=2", "--solver", "ddnm", "--prior", "natural", "--steps",
              "2", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "a"), "--equivariant", "mirror"]) == 2
    assert "--equivariant must be off" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(common + ["--out", str(tmp_path / "b"), "--equivariant", "flips"]) == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "b" / "in.json").read_text())
    assert side["evaluation"]["equivariant"] == "flips"
