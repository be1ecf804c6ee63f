"""Smoke tests of ``benchmarks/solvers.py`` (the solver benchmark script): its option parsing, the fixed image subset,
the results section of the markdown file, and one end-to-end run at toy scale (a tiny random prior on 16×16 images,
2 steps) through quality + overhead, throughput and the GPU section's code on the CPU. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from operators import Noise
from solver_testing import tiny_unet_prior

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("bench_solvers", ROOT / "benchmarks" / "solvers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_solvers"] = module
    spec.loader.exec_module(module)
    return module


def _images(folder: Path, n: int, size: int = 16) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        a, b = rng.uniform(0.5, 3, 2)
        img = np.stack([0.5 + 0.4 * np.sin(a * xx + i), 0.5 + 0.4 * np.cos(b * yy), 0.3 + 0.4 * xx * yy], -1)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def _tiny_prior_file(folder: Path) -> Path:
    """A random tiny 16×16 prior written as ``restore prior train`` exports one (safetensors + JSON card)."""
    from priors.train import TrainConfig, export

    prior = tiny_unet_prior(channels=3, size=16)
    cfg = TrainConfig(data="(random)", name="tiny-random", out=str(folder), size=16, arch="tiny", steps=0,
                      fp16_weights=False, domain="random weights (test)")
    weights, _ = export(cfg, prior.net, prior.net.cfg, 0, 0.0, torch.device("cpu"), 0)
    return weights


def test_presets_parse_fast_paper_and_mappings(bs):
    fast = bs.parse_presets("fast")
    assert fast["dps"] == "fast" and fast["ddnm"] == "default" and fast["daps"] == "daps-100"
    assert fast["reddiff"] == "fast" and fast["resample"] == "fast" and fast["latent-daps"] is None
    assert all(v is None for v in bs.parse_presets("paper").values())
    mixed = bs.parse_presets("fast,dps=default,daps=paper,reddiff=fast")
    assert mixed["dps"] == "default" and mixed["daps"] is None and mixed["reddiff"] == "fast"
    assert bs.parse_presets("ddnm=ddnm+")["ddnm"] == "ddnm+" and bs.parse_presets("ddnm=ddnm+")["dps"] is None
    for bad in ("quick", "dps=nope", "nosolver=fast"):
        with pytest.raises(SystemExit):
            bs.parse_presets(bad)


def test_preset_tables_in_the_docs_come_from_the_solver_classes(bs, tmp_path):
    """The preset tables of docs/benchmarks.md and docs/benchmarks-paper.md are what ``presets_markdown`` writes from
    the solver classes' presets (a preset changed in the code without rerunning ``benchmarks/solvers.py
    --presets-table docs/benchmarks.md docs/benchmarks-paper.md`` fails here), and the values are the code's."""
    from restore.solvers import SOLVERS

    text = bs.presets_markdown()
    for doc in ("docs/benchmarks.md", "docs/benchmarks-paper.md"):
        body = (ROOT / doc).read_text()
        assert bs.PRESETS_BEGIN in body and bs.PRESETS_END in body, doc
        block = body[body.index(bs.PRESETS_BEGIN) + len(bs.PRESETS_BEGIN):body.index(bs.PRESETS_END)]
        assert block.strip() == text.strip(), (f"{doc}: stale preset table; run python benchmarks/solvers.py "
                                               f"--presets-table docs/benchmarks.md docs/benchmarks-paper.md")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    fast = SOLVERS["dps"].presets["fast"]
    assert f"`fast`: steps={fast['steps']}, scale={fast['scale']:g} |" in rows["dps"]
    assert f"scale: {SOLVERS['dps'].presets['sr4']['scale']:g} (sr4," in rows["dps"]
    assert f"lr={SOLVERS['reddiff'].presets['fast']['lr']:g}" in rows["reddiff"]
    # rewriting: only between the markers; a file without them is left alone
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{bs.PRESETS_BEGIN}\n| stale |\n{bs.PRESETS_END}\nrest\n")
    assert bs.update_presets(doc, text)
    assert doc.read_text() == f"intro\n{bs.PRESETS_BEGIN}\n\n{text}\n{bs.PRESETS_END}\nrest\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not bs.update_presets(plain, text) and plain.read_text() == "no markers\n"


def test_tasks_and_the_fixed_subset(bs, tmp_path):
    assert bs.task_spec("inpaint-box", {}) == "mask:kind=box,size=32,margin=8"
    assert bs.task_spec("sr2", {}).startswith("sr:")                      # any operator preset
    assert bs.task_spec("mine", {"mine": "denoise"}) == "denoise"
    with pytest.raises(SystemExit):
        bs.task_spec("no-such-task", {})
    folder = _images(tmp_path / "imgs", 10)
    picked = [p.name for p in bs.select_images(folder, 4)]
    assert picked == ["00000.png", "00002.png", "00005.png", "00007.png"]   # evenly spaced, same every time
    assert picked == [p.name for p in bs.select_images(folder, 4)]
    assert len(bs.select_images(folder, 0)) == 10 and len(bs.select_images(folder, 50)) == 10


def test_markdown_section_is_replaced_between_its_markers(bs, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nMethod text.\n\n{bs.BEGIN}\n\n_No results yet._\n\n{bs.END}\n\nAfter.\n")
    bs.update_markdown(doc, "first\n")
    bs.update_markdown(doc, "second\n")
    text = doc.read_text()
    assert text.startswith("# Title\n\nMethod text.") and text.rstrip().endswith("After.")
    assert "second" in text and "first" not in text and "No results yet" not in text
    assert text.count(bs.BEGIN) == 1 and text.count(bs.END) == 1
    fresh = tmp_path / "new.md"
    bs.update_markdown(fresh, "table\n")
    assert bs.BEGIN in fresh.read_text() and "table" in fresh.read_text()


def test_end_to_end_at_toy_scale(bs, tmp_path, monkeypatch):
    # LPIPS: a missing weights file makes it "unavailable" at once (16×16 is also below AlexNet's smallest input)
    monkeypatch.setenv("RESTORE_LPIPS_WEIGHTS", str(tmp_path / "no-lpips.safetensors"))
    data = _images(tmp_path / "faces", 3)
    prior = _tiny_prior_file(tmp_path / "prior")
    out, doc, summary = tmp_path / "out", tmp_path / "doc.md", tmp_path / "summary.json"
    logged: list[str] = []
    result = bs.main(["--prior", str(prior), "--data", str(data), "--limit", "2",
                      "--tasks", "sr2,inpaint-random,motion", "--task-spec", "motion=blur:kind=motion,size=5",
                      "--solvers", "ddnm,dps,resample", "--presets", "fast", "--steps-override", "2",
                      "--latent-prior", "no-such-latent", "--mri-prior", "none", "--ct-prior", "none",
                      "--bare-repeats", "1", "--bare-seconds", "0", "--batch-sizes", "1,2",
                      "--throughput-task", "sr2", "--throughput-steps", "2", "--threads", "1",
                      "--out", str(out), "--markdown", str(doc), "--json", str(summary)], log=logged.append)

    rows = result["rows"]
    by = {(r["task"], r["solver"]) for r in rows}
    assert {("sr2", s) for s in ("pinv", "ddnm", "dps")} <= by and ("motion", "dps") in by
    assert ("motion", "ddnm") not in by                                   # refused: no SVD for a reflect motion blur
    assert all(r["status"] == "written" for r in rows)
    assert all(r["nfe"] == 2 for r in rows if r["solver"] != "pinv")
    assert all(r["lpips"] is None and r["lpips_unavailable"] for r in rows)
    reasons = {(s["group"], s["solver"]): s["reason"] for s in result["skipped"]}
    assert "no-such-latent" in reasons[("latent", "*")]                   # ReSample / latent DAPS skipped, with why
    assert reasons[("faces", "ddnm")]
    # overhead: one record per solver batch, with the backprop count for DPS
    assert len(result["overhead"]) == 2 * 2 + 3 * 2                       # ddnm on 2 tasks, dps on 3; 2 images each
    for o in result["overhead"]:
        assert math.isfinite(o["overhead"]) and o["overhead"] > 0
        assert o["nfe_backprop"] == (o["nfe"] if o["solver"] == "dps" else 0)
    # throughput at both batch sizes
    assert {t["solver"] for t in result["throughput"]} == {"ddnm", "dps"}
    assert all(set(t["images_per_second"]) == {"1", "2"} for t in result["throughput"])
    if not torch.cuda.is_available():
        assert "CUDA" in result["gpu"]["skipped_reason"]
    # outputs
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    saved = json.loads(summary.read_text())
    assert saved["config"]["presets"]["dps"] == "fast" and saved["priors"][0]["name"] == "tiny-random"
    text = doc.read_text()
    assert bs.BEGIN in text and "#### sr2" in text and "| pinv |" in text and "Solver overhead" in text
    assert "LPIPS unavailable" in text and "Batch throughput" in text and "no-such-latent" in text


def test_runs_side_by_side_combine_into_one_report(bs, tmp_path, monkeypatch):
    """Two runs with different groups and limits (one per core) merge into the report one run would write."""
    monkeypatch.setenv("RESTORE_LPIPS_WEIGHTS", str(tmp_path / "no-lpips.safetensors"))
    data = _images(tmp_path / "faces", 3)
    prior = _tiny_prior_file(tmp_path / "prior")
    common = ["--data", str(data), "--solvers", "ddnm", "--presets", "fast", "--steps-override", "1",
              "--latent-prior", "none", "--ct-prior", "none", "--bare-repeats", "1", "--bare-seconds", "0",
              "--sections", "quality,throughput", "--batch-sizes", "1", "--throughput-steps", "1", "--threads", "1"]
    a = bs.main(common + ["--prior", str(prior), "--mri-prior", "none", "--tasks", "sr2", "--limits", "faces=1",
                          "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")], log=lambda m: None)
    b = bs.main(common + ["--prior", "none", "--mri-prior", "none", "--tasks", "inpaint-random", "--limit", "2",
                          "--out", str(tmp_path / "b"), "--json", str(tmp_path / "b.json")], log=lambda m: None)
    assert len({r["image"] for r in a["rows"]}) == 1 and b["rows"] == []
    doc = tmp_path / "doc.md"
    merged = bs.main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--markdown", str(doc)],
                     log=lambda m: None)
    assert len(merged["rows"]) == len(a["rows"]) and merged["config"]["limits"] == {"faces": 1}
    assert [p["group"] for p in merged["priors"] if p.get("available")] == ["faces"]
    # the face group ran in the first run, so the second run's "faces skipped" is dropped
    assert not any(s["group"] == "faces" and s["task"] == "*" for s in merged["skipped"])
    assert "#### sr2" in doc.read_text() and " ; " in merged["command"]
    # a run repeated later replaces the earlier rows of the same solver × task instead of adding to them
    again = bs.main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "a.json")], log=lambda m: None)
    assert len(again["rows"]) == len(a["rows"]) and len(again["overhead"]) == len(a["overhead"])
    assert len(a["throughput"]) == 1 and len(again["throughput"]) == 1   # ddnm's throughput once, not twice
    with pytest.raises(SystemExit, match="--limits"):
        bs.main(["--limits", "faces=x"])


def test_gpu_section_code_runs_on_the_cpu_with_a_tiny_architecture(bs):
    from priors.adm import ADMConfig

    cfg = ADMConfig(image_size=16, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                    attention_resolutions="8", num_head_channels=32, learn_sigma=True, use_scale_shift_norm=True)
    gpu = bs.run_gpu(["ddnm", "dps", "resample"], Noise.parse(0.025), device="cpu", config=cfg, config_name="tiny",
                     batches=(1, 2), short=(1, 2), task="sr2", log=lambda m: None)
    rows = {(r["solver"], r["batch"]): r for r in gpu["rows"]}
    assert set(rows) == {("ddnm", 1), ("ddnm", 2), ("dps", 1), ("dps", 2)}
    assert rows[("dps", 1)]["full_steps"] == 1000 and rows[("dps", 1)]["nfe"] == 1000   # paper preset: 1000 steps
    assert rows[("ddnm", 2)]["nfe"] == 100 and rows[("dps", 2)]["preset"] == "sr2"
    assert all(r["seconds_per_image"] > 0 for r in gpu["rows"])
    assert [s["solver"] for s in gpu["skipped"]] == ["resample"]


def test_scale_section_measures_overhead_on_the_given_architecture(bs, tmp_path):
    from priors.adm import ADMConfig

    cfg = ADMConfig(image_size=16, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                    attention_resolutions="8", num_head_channels=32, learn_sigma=True, use_scale_shift_norm=True)
    presets = bs.parse_presets("fast")
    scale = bs.run_scale(["daps", "ddnm", "dps", "resample"], presets, Noise.parse(0.025),
                         ["deblur-motion", "ct-sparse60"], short=(1, 2), config=cfg, config_name="tiny", repeats=1,
                         log=lambda m: None)
    rows = {(r["solver"], r["task"]): r for r in scale["rows"]}
    # DDNM refuses the motion blur with reflect boundary and CT (no SVD) with its own sentence; ReSample is latent
    assert set(rows) == {("daps", "deblur-motion"), ("daps", "ct-sparse60"), ("dps", "deblur-motion"),
                         ("dps", "ct-sparse60")}
    assert {(s["solver"], s["task"]) for s in scale["skipped"]} == {("ddnm", "deblur-motion"), ("ddnm", "ct-sparse60")}
    assert all("needs a linear operator with an SVD" in s["reason"] for s in scale["skipped"])
    daps = rows[("daps", "deblur-motion")]
    # DAPS-100: 50 levels of 2 ODE steps and 100 Langevin steps (each calls A and Aᵀ once) on the motion blur
    assert daps["preset"] == "daps-100" and daps["full_steps"] == 50 and daps["nfe"] == 100
    assert [p["nfe"] for p in daps["points"]] == [2, 4] and daps["nfe_backprop"] == 0
    per_level = daps["points"][1]["operator_evals"] - daps["points"][0]["operator_evals"]
    assert per_level >= 200   # 100 Langevin steps × (A, Aᵀ) + the ODE's data-free steps
    # operator calls on the line through the two runs: a once-per-run part (the operator-norm estimate) counted once
    assert daps["operator_evals"] == daps["points"][0]["operator_evals"] + 49 * per_level
    dps = rows[("dps", "ct-sparse60")]
    assert dps["full_steps"] == dps["nfe"] == dps["nfe_backprop"] == 100   # DPS fast: 100 steps, all backpropagated
    assert rows[("daps", "ct-sparse60")]["channels"] == 1 and daps["channels"] == 3
    for r in scale["rows"]:
        (p1, p2) = r["points"]
        # the line through the two runs (steps 1 and 2); a busy machine can time the longer run faster, and then the
        # per-step time is the longer run's seconds per step (``time_line``), never negative
        rise = p2["seconds"] - p1["seconds"]
        expected = rise / (p2["steps"] - p1["steps"]) if rise > 0 else p2["seconds"] / p2["steps"]
        assert r["per_step_s"] == pytest.approx(expected) and r["per_step_s"] > 0
        assert r["seconds"] == pytest.approx(r["setup_s"] + r["per_step_s"] * r["full_steps"])
        bare = r["bare_fwd_bwd_s"] if r["nfe_backprop"] else r["bare_fwd_s"]
        assert r["network_seconds"] == pytest.approx(r["nfe"] * bare)
        assert r["overhead"] == pytest.approx(r["seconds"] / r["network_seconds"])
        assert r["overhead_short"] == pytest.approx(p2["seconds"] / (p2["nfe"] * bare))
    text = "\n".join(bs.scale_table(scale))
    assert "| daps | deblur-motion | daps-100 | 50 annealing_steps | 100 (0) |" in text
    assert "ddnm on ct-sparse60" in text
    with pytest.raises(SystemExit, match="--scale-steps"):
        bs.main(["--sections", "scale", "--scale-steps", "3"])
    # combining: a solver × task measured again in a later run replaces the earlier row, the others stay
    again = bs.run_scale(["daps"], presets, Noise.parse(0.025), ["deblur-motion"], short=(1, 2), config=cfg,
                         config_name="tiny", repeats=1, log=lambda m: None)
    files = []
    for i, sc in enumerate((scale, again)):
        result = dict(config=dict(sections=["scale"]), command=f"run {i}", rows=[], overhead=[], throughput=[],
                      skipped=[], priors=[], gpu={}, scale=sc)
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(bs._clean(result)))
    merged = bs.combine([str(f) for f in files])["scale"]
    assert len(merged["rows"]) == 4 and len(merged["skipped"]) == 2
    moved = [r for r in merged["rows"] if (r["solver"], r["task"]) == ("daps", "deblur-motion")]
    assert len(moved) == 1 and moved[0]["seconds"] == pytest.approx(again["rows"][0]["seconds"])


def test_param_and_label_suffix_keep_a_variant_apart_when_combined(bs, tmp_path, monkeypatch):
    """A run with a parameter over the preset (``--param``), labelled with ``--label-suffix``, combines with a plain
    run of the same solver into two rows per image instead of replacing it; the parameter reaches the solver."""
    monkeypatch.setenv("RESTORE_LPIPS_WEIGHTS", str(tmp_path / "no-lpips.safetensors"))
    data = _images(tmp_path / "faces", 2)
    prior = _tiny_prior_file(tmp_path / "prior")
    common = ["--data", str(data), "--prior", str(prior), "--solvers", "ddnm", "--presets", "fast",
              "--steps-override", "2", "--latent-prior", "none", "--mri-prior", "none", "--ct-prior", "none",
              "--bare-repeats", "1", "--bare-seconds", "0", "--sections", "quality", "--tasks", "sr2",
              "--limit", "1", "--threads", "1"]
    plain = bs.main(common + ["--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")], log=lambda m: None)
    varied = bs.main(common + ["--param", "ddnm:eta=0.0", "--label-suffix", "+eta0", "--out", str(tmp_path / "b"),
                               "--json", str(tmp_path / "b.json")], log=lambda m: None)
    assert {r["solver"] for r in varied["rows"]} == {"pinv", "ddnm+eta0"}
    assert [o["solver"] for o in varied["overhead"]] == ["ddnm+eta0"]
    side = json.loads(Path(next(r["output"] for r in varied["rows"] if r["solver"] == "ddnm+eta0"))
                      .with_suffix(".json").read_text())
    assert float(side["params"]["eta"]) == 0.0
    plain_side = json.loads(Path(next(r["output"] for r in plain["rows"] if r["solver"] == "ddnm"))
                            .with_suffix(".json").read_text())
    assert float(plain_side["params"]["eta"]) == 0.85
    doc = tmp_path / "doc.md"
    merged = bs.main(["--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--markdown", str(doc)],
                     log=lambda m: None)
    assert sorted(r["solver"] for r in merged["rows"]) == ["ddnm", "ddnm+eta0", "pinv"]
    text = doc.read_text()
    assert "| ddnm+eta0 |" in text and "| ddnm |" in text
    assert "Labelled variants: ddnm+eta0 = ddnm, preset default, eta=0.0" in text
    for bad, match in ((["--param", "ddnm:eta"], "SOLVER:KEY=VALUE"), (["--param", "nope:eta=1"], "unknown solver"),
                       (["--param", "ddnm:bogus=1"], "no parameter 'bogus'")):
        with pytest.raises(SystemExit, match=match):
            bs.main(common + bad)
