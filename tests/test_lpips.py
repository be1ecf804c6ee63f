"""LPIPS: the published reference distances from the shared offline weights, metric properties, weight resolution
(argument, $RESTORE_LPIPS_WEIGHTS, torchvision's cache) and the errors for bad or missing weights."""

import ast
import socket
import sys
import time

import pytest
import torch

_BEFORE = set(sys.modules)
import restore.lpips_metric as L  # noqa: E402  (what importing it pulls in is checked below)
from restore.io import RestoreError, load_image  # noqa: E402

_PULLED_IN = sorted(m for m in ("lpips", "torchvision", "safetensors") if m in set(sys.modules) - _BEFORE)

WEIGHTS_NAME = "lpips/lpips_alex_v0.1.safetensors"
FIX = "--lpips-weights FILE or RESTORE_LPIPS_WEIGHTS (e.g. ../shared/data/lpips/lpips_alex_v0.1.safetensors)"


@pytest.fixture
def weights(shared):
    path = shared / WEIGHTS_NAME
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture
def images(shared):
    return {name: load_image(shared / "lpips" / f"ex_{name}.png") for name in ("ref", "p0", "p1")}


@pytest.fixture
def metric(weights):
    return L.get_lpips("alex", weights=weights)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("RESTORE_LPIPS_WEIGHTS", raising=False)


@pytest.fixture
def offline(monkeypatch, tmp_path, no_env):
    """An empty torch cache and no network: any connection attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    L.clear_cache()  # the "torchvision" entry of an earlier test must not answer for this one
    yield tmp_path / "torch"
    L.clear_cache()


def test_reference_distances(metric, images):
    d0 = metric(images["p0"], images["ref"])
    d1 = metric(images["p1"], images["ref"])
    assert isinstance(d0, float)
    assert d0 == pytest.approx(0.722, abs=5e-4)
    assert d1 == pytest.approx(0.138, abs=5e-4)


def test_identity_symmetry_batch(metric, images):
    ref, p0, p1 = images["ref"], images["p0"], images["p1"]
    assert metric(ref, ref) == pytest.approx(0.0, abs=1e-7)
    assert metric(ref, p0) == pytest.approx(metric(p0, ref), abs=1e-6)
    batch = metric(torch.stack([p0, p1, ref]), torch.stack([ref, ref, ref]))
    assert isinstance(batch, list) and len(batch) == 3
    assert batch == pytest.approx([metric(p0, ref), metric(p1, ref), 0.0], abs=1e-5)
    assert metric.distances(p0, ref).shape == (1,)


def test_grey_is_replicated_to_rgb(metric, images):
    grey_ref, grey_p1 = images["ref"].mean(0, keepdim=True), images["p1"].mean(0, keepdim=True)
    d = metric(grey_p1, grey_ref)
    assert 0 < d < 1
    assert d == pytest.approx(metric(grey_p1.expand(3, -1, -1), grey_ref.expand(3, -1, -1)), abs=1e-6)


def test_input_errors(metric, images):
    with pytest.raises(RestoreError, match="same shape"):
        metric(images["ref"], images["ref"][:, :32])
    with pytest.raises(RestoreError, match="channels"):
        metric(torch.rand(2, 64, 64), torch.rand(2, 64, 64))
    with pytest.raises(RestoreError, match="at least 31 pixels"):
        metric(torch.rand(3, 16, 16), torch.rand(3, 16, 16))


def test_env_var_weights_and_no_network(monkeypatch, weights, images):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted although weights were given")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("RESTORE_LPIPS_WEIGHTS", str(weights))
    m = L.get_lpips()
    assert m.source == str(weights.resolve())
    assert m(images["p1"], images["ref"]) == pytest.approx(0.138, abs=5e-4)
    value, reason = L.lpips_or_reason(images["p0"], images["ref"])
    assert reason is None and value == pytest.approx(0.722, abs=5e-4)


def test_torchvision_cache_is_used(offline, weights, images):
    """Backbone from a torchvision checkpoint already in $TORCH_HOME (heads from the lpips package): no download."""
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(weights)).items() if k.startswith("features.")}
    state["classifier.1.weight"] = torch.zeros(2, 2)  # a real checkpoint has the classifier too: ignored
    ckpt = offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)
    m = L.get_lpips()
    assert "torchvision cache" in m.source
    assert m(images["p0"], images["ref"]) == pytest.approx(0.722, abs=5e-4)


def test_unavailable_without_weights_or_network(offline):
    start = time.perf_counter()
    with pytest.raises(L.LPIPSUnavailable) as exc:
        L.get_lpips("alex")
    assert time.perf_counter() - start < 10  # lpips/torchvision import included; no hanging on the network
    msg = str(exc.value)
    assert FIX in msg and "cannot be downloaded" in msg and "\n" not in msg
    assert isinstance(exc.value, RestoreError)

    with pytest.raises(L.LPIPSUnavailable, match="not in the torch cache"):
        L.get_lpips("alex", download=False)
    with pytest.raises(L.LPIPSUnavailable, match="VGG16"):
        L.get_lpips("vgg")

    value, reason = L.lpips_or_reason(torch.rand(3, 64, 64), torch.rand(3, 64, 64))
    assert value is None and FIX in reason


def test_bad_weight_files(tmp_path, no_env, weights):
    from safetensors.torch import load_file, save_file

    missing = tmp_path / "tiny.safetensors"
    save_file({"features.0.weight": torch.zeros(2, 3, 3, 3)}, str(missing))
    with pytest.raises(RestoreError, match=r"tiny\.safetensors.*lacks the alex backbone key"):
        L.get_lpips(weights=missing)

    wrong_shape = tmp_path / "shapes.safetensors"
    names = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")]
    save_file({k: torch.zeros(1) for k in names}, str(wrong_shape))
    with pytest.raises(RestoreError, match=r"shapes\.safetensors.*'features\.\d+\.\w+' of shape \(1,\) where"):
        L.get_lpips(weights=wrong_shape)

    bad_head = tmp_path / "head.safetensors"
    state = load_file(str(weights))
    state["lin2.model.1.weight"] = torch.zeros(1, 3, 1, 1)
    save_file(state, str(bad_head))
    with pytest.raises(RestoreError, match=r"head\.safetensors.*'lin2\.model\.1\.weight'"):
        L.get_lpips(weights=bad_head)

    with pytest.raises(RestoreError, match=r"lacks the vgg backbone key"):  # an AlexNet file given for VGG
        L.get_lpips("vgg", weights=weights)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(RestoreError, match=r"cannot read the LPIPS weights file '.*corrupt\.safetensors'"):
        L.get_lpips(weights=corrupt)

    with pytest.raises(RestoreError, match="does not exist"):
        L.get_lpips(weights=tmp_path / "absent.safetensors")

    value, reason = L.lpips_or_reason(torch.rand(3, 64, 64), torch.rand(3, 64, 64), weights=corrupt)
    assert value is None and "corrupt.safetensors" in reason

    with pytest.raises(RestoreError, match="unknown LPIPS network"):
        L.get_lpips("squeeze")


def test_import_is_lazy():
    """Importing the module loads neither lpips nor torchvision (CLI start-up time): imports live in functions."""
    assert _PULLED_IN == []
    tree = ast.parse(open(L.__file__, encoding="utf-8").read())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not top & {"lpips", "torchvision", "safetensors"}
