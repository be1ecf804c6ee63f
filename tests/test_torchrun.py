"""torchrun: two gloo processes on the CPU give exactly the results of one process (per-image seeds), for
`restore bench` (rank 0 merges the shards) and `restore solve` (every rank writes its share of the outputs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restore.cli import main
from restore.io import save_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _torchrun(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(29500 + os.getpid() % 1000), "-m", "restore", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def _images(folder: Path, n: int = 5) -> None:
    g = torch.Generator().manual_seed(3)
    for k in range(n):
        save_image(folder / f"im{k}.png", torch.rand(3, 16, 16, generator=g))


def test_torchrun_bench_equals_a_single_process_run(tmp_path, capsys):
    _images(tmp_path / "clean")
    common = ["bench", str(tmp_path / "clean"), "-o", "sr2;inpaint-random", "--noise", "0.02", "--solver", "pinv",
              "--baselines", "none"]
    done = _torchrun(tmp_path, *common, "--out", str(tmp_path / "dist"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--out", str(tmp_path / "single"), "--threads", "1"]) == 0
    key = lambda r: (r["image"], r["operator"], r["solver"])  # noqa: E731
    dist = {key(r): r for r in json.loads((tmp_path / "dist" / "results.json").read_text())}
    single = {key(r): r for r in json.loads((tmp_path / "single" / "results.json").read_text())}
    assert sorted(dist) == sorted(single) and len(single) == 10
    for k, r in single.items():
        assert dist[k]["psnr"] == r["psnr"] and dist[k]["ssim"] == r["ssim"]
    assert (tmp_path / "dist" / "shard-0-of-2").is_dir() and (tmp_path / "dist" / "report.html").is_file()
    # the same command again resumes: nothing is redone, the merged results are unchanged
    again = _torchrun(tmp_path, *common, "--out", str(tmp_path / "dist"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {key(r): r["psnr"] for r in json.loads((tmp_path / "dist" / "results.json").read_text())} == \
        {k: r["psnr"] for k, r in dist.items()}


def test_torchrun_solve_writes_every_output_once(tmp_path, capsys):
    _images(tmp_path / "in")
    common = ["solve", str(tmp_path / "in"), "--solver", "pinv", "-o", "denoise", "--noise", "0.02"]
    done = _torchrun(tmp_path, *common, "--out", str(tmp_path / "dist"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    names = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == names and len(names) == 10
    for name in names:
        if name.endswith(".png"):
            assert (tmp_path / "dist" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    assert done.stdout.count("written") == 5  # rank 0 prints one table of all the rows
