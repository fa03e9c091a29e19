"""Loading never runs code: crafted checkpoints are refused, old checkpoints still load, image bombs are refused."""
from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_script_here

from common.errors import UserError
from common.runtime import rng_state, set_rng_state
from common.training import load_weights, safe_load, strip_timing
from problem1.config import Config as Config1
from problem1.train import train as train1


class _Payload:
    """Unpickling this calls ``os.system``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"problem": "problem1", "model": {}, "config": {}, "payload": _Payload(marker)}, path)
    assert not marker.exists()




def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["p1-evaluate", "p1-resume", "p2-evaluate", "p2-resume"])
def test_crafted_checkpoint_runs_no_code(case, tiny_data, tmp_path, capsys):
    marker, res = tmp_path / "MARKER", tmp_path / "res"
    res.mkdir()
    (res / "notes.txt").write_text("already here")
    data = ["--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu"]
    if case == "p1-evaluate":
        evil = tmp_path / "shared.pth"
        _crafted_checkpoint(evil, marker)
        argv = ["problem1/evaluate.py", *data, "--checkpoint", str(evil)]
    elif case == "p1-resume":
        evil = res / "last.pth"
        _crafted_checkpoint(evil, marker)
        argv = ["problem1/train.py", *data, "--epochs", "1", "--resume"]
    elif case == "p2-evaluate":
        evil = res / "heatmap_model.pth"
        _crafted_checkpoint(evil, marker)
        _crafted_checkpoint(res / "regression_model.pth", marker)
        argv = ["problem2/evaluate.py", *data]
    else:
        evil = res / "last.pth"
        _crafted_checkpoint(evil, marker)
        argv = ["problem2/train.py", *data, "--epochs", "1", "--resume"]
    before = _snapshot(res)
    r = run_script_here(capsys, *argv)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert evil.name in r.stderr and "may not contain" in r.stderr, r.stderr
    assert _snapshot(res) == before  # nothing in the results folder changed


def test_rng_state_is_plain_and_restores_exactly(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    torch.save({"rng": rng_state()}, tmp_path / "s.pth")
    expected = (random.random(), np.random.normal(), np.random.rand(), torch.rand(3).tolist())
    set_rng_state(torch.load(tmp_path / "s.pth", weights_only=True)["rng"])  # no allowlist needed
    assert (random.random(), np.random.normal(), np.random.rand(), torch.rand(3).tolist()) == expected


def _to_version_1(path: Path) -> None:
    """Rewrite a checkpoint as this project wrote them before the safe format: Python's and NumPy's RNG states as
    pickled tuples (NumPy's holding an ndarray), no ``format`` key, and ``amp=True`` meaning bf16 on CUDA only."""
    ckpt = safe_load(path)
    rng = ckpt["rng"]
    py, npy = rng["python"], rng["numpy"]
    rng["python"] = (py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"])
    rng["numpy"] = (npy["bit_generator"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                    npy["gauss"])
    del ckpt["format"]
    ckpt["config"]["amp"] = True
    torch.save(ckpt, path)
    assert any("numpy" in g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path))


def _config1(data: Path, results: Path, epochs: int) -> Config1:
    return Config1(data_dir=str(data), results_dir=str(results), epochs=epochs, limit_train=4, batch_size=2,
                   limit_val=4, eval_batch_size=4, device="cpu")


def test_version_1_checkpoint_resumes_and_evaluates(tiny_data, tmp_path, capsys):
    ref, old = tmp_path / "ref", tmp_path / "old"
    train1(_config1(tiny_data, ref, 2))
    train1(_config1(tiny_data, old, 1))
    _to_version_1(old / "last.pth")
    _to_version_1(old / "best_model.pth")
    # Resume restores the legacy RNG states and reads amp=True as the old meaning (fp32 on CPU), so the
    # resumed run is the uninterrupted one.
    log = train1(_config1(tiny_data, old, 2), resume=True)
    assert strip_timing(log) == strip_timing(json.loads((ref / "training_log.json").read_text()))
    r = run_script_here(capsys, "problem1/evaluate.py", "--data-dir", str(tiny_data), "--results-dir",
                        str(tmp_path / "eval"), "--checkpoint", str(old / "best_model.pth"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_version_1_problem2_checkpoint_evaluates(tiny_data, tmp_path, capsys):
    res = tmp_path / "res"
    r = run_script_here(capsys, "problem2/train.py", "--data-dir", str(tiny_data), "--results-dir", str(res),
                        "--epochs", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    for name in ("heatmap_model.pth", "regression_model.pth"):
        _to_version_1(res / name)
    r = run_script_here(capsys, "problem2/evaluate.py", "--data-dir", str(tiny_data), "--results-dir", str(res),
                        "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads((res / "metrics.json").read_text())["methods"]


def test_legacy_allowlist_admits_nothing_else(tmp_path):
    """A file that needs the NumPy globals *and* something else is still refused, and nothing runs."""
    marker = tmp_path / "MARKER"
    torch.save({"numpy": np.random.get_state(), "payload": _Payload(marker)}, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match="may not contain.*posix.system"):
        safe_load(tmp_path / "mixed.pth")
    assert not marker.exists()


def test_weights_mismatch_error_is_short():
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(20)])
    other = {f"x.{i}": torch.zeros(1) for i in range(30)}
    with pytest.raises(UserError) as e:
        load_weights(model, other, "m.pth")
    msg = str(e.value)
    assert "40 missing keys (0.weight, 0.bias, 1.weight, ...)" in msg and "30 unexpected keys" in msg
    assert len(msg) < 300 and "\n" not in msg
    sd = model.state_dict()
    sd["3.weight"] = torch.zeros(3, 2)
    with pytest.raises(UserError, match=r"1 shape mismatches \(3.weight \[3, 2\] vs \[2, 2\]\)"):
        load_weights(model, sd, "m.pth")


def _png_bomb(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A valid, tiny PNG whose header declares ``width x height`` (RGB): decoding it would need gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * (3 * width)
    idat = zlib.compress(row * 16, 9)  # a few rows; the header alone is what PIL checks
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    assert path.stat().st_size < 1_000_000


@pytest.mark.parametrize("problem,folder", [("problem1", "detection"), ("problem2", "keypoints")])
@pytest.mark.parametrize("side", [30000, 12000])  # refused by PIL itself / only warned about by PIL
def test_decompression_bomb_is_one_line(problem, folder, side, tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / folder, data / folder)
    victim = sorted((data / folder / "train").glob("*.png"))[0]
    _png_bomb(victim, side, side)
    r = run_script_here(capsys, f"{problem}/train.py", "--data-dir", str(data), "--results-dir", str(tmp_path / "r"),
                        "--epochs", "1", "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert victim.name in r.stderr
    assert not (tmp_path / "r").exists()
