"""Spec strings, presets, noise models and seeding."""

import math

import pytest
import torch

import operators
from operators import Noise, OperatorError, parse
from operators.seeding import generators, stream_seed


def test_canonical_form_lists_every_parameter_in_declared_order():
    spec = parse("mask:size=32,kind=random")
    assert str(spec).startswith("mask:kind=random,size=32,margin=16,position=random,fraction=0.7")
    assert parse(str(spec)) == spec


def test_preset_expands_and_accepts_overrides():
    assert parse("inpaint-random") == parse("mask:kind=random,fraction=0.7")
    assert parse("inpaint-random:fraction=0.5")["fraction"] == 0.5


@pytest.mark.parametrize("text, fragment", [
    ("blurry:size=3", "unknown operator 'blurry'"),
    ("mask:colour=3", "has no parameter 'colour'"),
    ("mask:size=big", "must be an integer"),
    ("mask:size=2.5", "must be an integer"),
    ("mask:kind=star", "must be one of box, random, freeform, file"),
    ("mask:fraction=1.5", "strictly between 0 and 1"),
    ("mask:size", "write parameters as key=value"),
    ("", "spec is empty"),
])
def test_bad_specs_get_one_clear_sentence(text, fragment):
    with pytest.raises(OperatorError) as info:
        parse(text)
    message = str(info.value)
    assert fragment in message
    assert message.endswith(".") and "\n" not in message


def test_float_values_round_trip_exactly():
    spec = parse("mask:kind=random,fraction=0.1234567890123")
    assert parse(str(spec))["fraction"] == 0.1234567890123


@pytest.mark.parametrize("text, expected", [
    ("0.025", Noise("gaussian", sigma=0.025)),
    (0.1, Noise("gaussian", sigma=0.1)),
    ("gaussian:0.05", Noise("gaussian", sigma=0.05)),
    ("poisson:255", Noise("poisson", rate=255.0)),
    ("none", Noise("none")),
    ("0", Noise("none")),
])
def test_noise_parse(text, expected):
    assert Noise.parse(text) == expected
    assert Noise.parse(str(Noise.parse(text))) == Noise.parse(text)


def test_noise_parse_errors():
    for bad in ("loud", "gaussian:abc", "poisson:-1", "-0.5"):
        with pytest.raises(OperatorError):
            Noise.parse(bad)


def test_gaussian_noise_statistics_and_scale():
    y = torch.zeros(1, 1, 256, 256)
    noisy = Noise.parse(0.025).sample(y, generators([3], "noise"))
    assert abs(float(noisy.std()) - 0.025) < 0.001
    assert abs(float(noisy.mean())) < 0.001


def test_complex_noise_has_sigma_per_component():
    y = torch.zeros(1, 1, 256, 256, dtype=torch.complex64)
    noisy = Noise.parse(0.1).sample(y, generators([3], "noise"))
    assert abs(float(noisy.real.std()) - 0.1) < 0.004
    assert abs(float(noisy.imag.std()) - 0.1) < 0.004
    assert abs(float(torch.corrcoef(torch.stack([noisy.real.flatten(), noisy.imag.flatten()]))[0, 1])) < 0.02


def test_poisson_noise_mean_and_variance():
    rate, level = 50.0, 0.4
    y = torch.full((1, 1, 256, 256), level)
    noisy = Noise.parse(f"poisson:{rate}").sample(y, generators([1], "noise"))
    assert abs(float(noisy.mean()) - level) < 0.005
    assert math.isclose(float(noisy.var()), level / rate, rel_tol=0.05)  # Var = λ/rate² with λ = rate·level


def test_streams_are_distinct_and_stable():
    assert stream_seed(0, "noise") != stream_seed(0, "operator") != stream_seed(1, "noise")
    assert stream_seed(7, "noise") == stream_seed(7, "noise")
    a = torch.randn(4, generator=generators([7], "noise")[0])
    b = torch.randn(4, generator=generators([7], "noise")[0])
    assert torch.equal(a, b)


def test_every_preset_parses():
    for name, (spec, description) in operators.PRESETS.items():
        assert parse(name) == parse(spec), name
        assert description
