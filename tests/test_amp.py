"""bf16 mixed precision: PyTorch's capability check decides, ``--no-amp`` is exact fp32, bf16 runs are deterministic
and resume exactly.

The training tests force the capability check to "native bf16" so they exercise bf16 on every CPU (where it is
emulated it is only slower); the SIGKILL test needs a real process and so runs only where bf16 is native.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_main

import common.runtime as runtime
from common.runtime import autocast, cpu_has_native_bf16, resolve_precision
from common.training import strip_timing
from problem1 import train as train1
from problem2 import train as train2

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _log(results) -> list[dict]:
    return strip_timing(json.loads((results / "training_log.json").read_text()))


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU computes bf16 natively (as AVX512-BF16/AMX CPUs do)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)


@pytest.mark.parametrize("native", [True, False])
def test_capability_check_drives_the_choice(native, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision(CPU, True) == ("bf16" if native else "fp32")
    assert resolve_precision(CPU, None) == "fp32"  # opt-in on CPU ...
    assert resolve_precision(CPU, None, cpu_bf16=True) == ("bf16" if native else "fp32")  # ... unless validated
    assert resolve_precision(CPU, False, cpu_bf16=True) == "fp32"
    assert resolve_precision(CPU, False) == "fp32"
    assert resolve_precision(CUDA, None) == "bf16" and resolve_precision(CUDA, True) == "bf16"
    assert resolve_precision(CUDA, False) == "fp32"
    assert resolve_precision(torch.device("mps"), True) == "fp32"
    x = torch.ones(2, 2)
    with autocast(CPU, True):
        assert (x @ x).dtype == (torch.bfloat16 if native else torch.float32)
    with autocast(CPU, None), autocast(CPU, False):
        assert (x @ x).dtype == torch.float32


@pytest.mark.parametrize("avx512_bf16,amx,expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_capability_check_is_pytorchs(avx512_bf16, amx, expected, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_native_bf16() is expected


P2 = ["--device", "cpu", "--model", "heatmap", "--limit-train", "2", "--limit-val", "2"]  # one batch either way


def test_problem2_bf16_trains_deterministically_and_resumes(native_bf16, tiny_data, tmp_path):
    """A run stopped after epoch 1 and resumed equals the uninterrupted run record for record, so bf16 runs are
    both deterministic (the same first epoch twice) and resume exactly."""
    common = [*P2, "--data-dir", str(tiny_data), "--amp", "--lr", "0.003"]
    a, c, f = (tmp_path / n for n in "acf")
    assert run_main(train2.main, [*common, "--epochs", "2", "--results-dir", str(a)]) == 0
    log = _log(a)
    assert log[-1]["train"]["loss"] < log[0]["train"]["loss"]  # it learns
    assert json.loads((a / "config.json").read_text())["precision"] == "bf16"
    assert run_main(train2.main, [*common, "--epochs", "1", "--results-dir", str(c)]) == 0
    assert run_main(train2.main, [*common, "--epochs", "2", "--results-dir", str(c), "--resume"]) == 0
    assert json.dumps(_log(c)) == json.dumps(log)
    # ... and bf16 was really used: exact fp32 gives other numbers
    assert run_main(train2.main, [*common[:-3], "--no-amp", "--lr", "0.003", "--epochs", "2", "--results-dir",
                               str(f)]) == 0
    assert _log(f) != log
    assert json.loads((f / "config.json").read_text())["precision"] == "fp32"


def test_amp_changes_nothing_without_native_bf16(monkeypatch, tiny_data, tmp_path):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    common = [*P2, "--data-dir", str(tiny_data), "--epochs", "1"]
    assert run_main(train2.main, [*common, "--amp", "--results-dir", str(tmp_path / "a")]) == 0
    assert run_main(train2.main, [*common, "--no-amp", "--results-dir", str(tmp_path / "b")]) == 0
    assert json.dumps(_log(tmp_path / "a")) == json.dumps(_log(tmp_path / "b"))
    assert json.loads((tmp_path / "a" / "config.json").read_text())["precision"] == "fp32"


def _p1(images: int) -> list[str]:
    """Problem 1 on ``images`` training images, one per batch, and one validation image."""
    return ["--device", "cpu", "--limit-train", str(images), "--batch-size", "1", "--limit-val", "1",
            "--eval-batch-size", "1"]


P1 = _p1(2)


def test_problem1_bf16_deterministic_and_resumes(native_bf16, tiny_data, tmp_path):
    """As for problem 2: one epoch, then resumed to two, equals two epochs in one go (the same first epoch twice, and
    an exact resume). The interrupted run starts without a precision flag: on a CPU with native bf16 problem 1's
    default is bf16 (validated), so it must also equal the ``--amp`` run record for record.

    One training image per epoch: where bf16 is emulated a detector step takes seconds, and what resuming must restore
    of the data order (several images and batches) is checked in fp32 by ``test_problem1_cli.py``; here it is bf16's
    own state: the precision chosen and recorded, deterministic kernels, the optimizer's state."""
    common = [*_p1(1), "--data-dir", str(tiny_data)]
    a, c = tmp_path / "a", tmp_path / "c"
    assert run_main(train1.main, [*common, "--amp", "--epochs", "2", "--results-dir", str(a)]) == 0
    assert run_main(train1.main, [*common, "--epochs", "1", "--results-dir", str(c)]) == 0
    assert json.loads((c / "config.json").read_text())["precision"] == "bf16"  # the default, no flag given
    assert run_main(train1.main, [*common, "--epochs", "2", "--results-dir", str(c), "--resume"]) == 0
    assert json.dumps(_log(c)) == json.dumps(_log(a))
    assert json.loads((a / "config.json").read_text())["precision"] == "bf16"


# Tolerances of bf16 evaluation against fp32 on a tiny trained model: the total loss to 1%, mAP and PCK to 0.05 (one
# of the 20 keypoints of 4 images). A flat heatmap moves its peak with bf16 rounding, so single predictions may move
# far. The 1e-9 lets exactly one keypoint pass: PCK is a count over 20, and 0.65 - 0.6 is 0.05000000000000004 in
# floats.
LOSS_RTOL, METRIC_ATOL = 0.01, 0.05 + 1e-9


@pytest.mark.xdist_group("overfit_detector")
def test_bf16_evaluation_is_close_to_fp32_on_a_tiny_trained_model(native_bf16, tiny_data, overfit_detector):
    from helpers import overfit

    from problem1.config import Config as Config1
    from problem1.evaluate import evaluate as evaluate1
    from problem1.loss import DetectionLoss
    from problem2.config import Config as Config2
    from problem2.dataset import load_split as load2
    from problem2.evaluate import evaluate as evaluate2
    from problem2.methods import build_codec, build_criterion, build_model

    model, data, _ = overfit_detector  # 20 steps on these 4 images
    crit = DetectionLoss()
    fp32, bf16 = (evaluate1(model, data, Config1(eval_batch_size=4, amp=amp), CPU, crit) for amp in (False, True))
    assert fp32["loss"] != bf16["loss"]  # bf16 was really used
    assert bf16["loss"]["loss_total"] == pytest.approx(fp32["loss"]["loss_total"], rel=LOSS_RTOL)
    assert abs(bf16["mAP"] - fp32["mAP"]) <= METRIC_ATOL

    cfg = Config2()
    ds = load2(tiny_data, "train", limit=4)
    ds = ds.with_codec(build_codec("heatmap", cfg, ds.keypoint_names))
    images, targets, _ = ds.get_batch(torch.arange(4))
    net, crit2 = build_model("heatmap", 5, cfg), build_criterion("heatmap", cfg)
    overfit(net, crit2, images, targets, steps=40, lr=3e-3)
    fp32, bf16 = (evaluate2(net, ds, 64, amp) for amp in (False, True))
    assert not torch.equal(fp32["predictions"], bf16["predictions"])
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=LOSS_RTOL)
    for t, v in fp32["metrics"]["pck"].items():
        assert abs(bf16["metrics"]["pck"][t] - v) <= METRIC_ATOL, t


def test_each_problem_has_its_own_cpu_default(native_bf16, tiny_data, tmp_path):
    """Without a flag, problem 2 trains in fp32 on a CPU with native bf16 (not validated there); problem 1's default
    on the same CPU, bf16, is checked by ``test_problem1_bf16_deterministic_and_resumes``."""
    assert run_main(train2.main, [*P2, "--data-dir", str(tiny_data), "--epochs", "1", "--results-dir",
                                  str(tmp_path / "p2")]) == 0
    assert json.loads((tmp_path / "p2" / "config.json").read_text())["precision"] == "fp32"


def test_resume_keeps_the_precision_the_run_began_in(native_bf16, tiny_data, tmp_path, monkeypatch):
    """A run begun in fp32 under an older default goes on in fp32 after the default became bf16."""
    common = [*P1, "--data-dir", str(tiny_data)]
    ref, old = tmp_path / "ref", tmp_path / "old"
    assert run_main(train1.main, [*common, "--no-amp", "--epochs", "2", "--results-dir", str(ref)]) == 0
    with monkeypatch.context() as m:
        m.setattr(train1.Config, "CPU_BF16_DEFAULT", False)
        assert run_main(train1.main, [*common, "--epochs", "1", "--results-dir", str(old)]) == 0
    assert json.loads((old / "config.json").read_text())["precision"] == "fp32"
    assert run_main(train1.main, [*common, "--epochs", "2", "--results-dir", str(old), "--resume"]) == 0
    assert json.loads((old / "config.json").read_text())["precision"] == "fp32"
    assert _log(old) == _log(ref)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="a real process uses the real capability check")
def test_bf16_sigkill_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    common = [*P2, "--data-dir", str(tiny_data), "--amp", "--epochs", "3"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert run_main(train2.main, [*common, "--results-dir", str(ref)]) == 0
    proc = subprocess.Popen([sys.executable, "problem2/train.py", *common, "--results-dir", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert torch.load(killed / "last.pth", weights_only=True)["epoch"] < 3
    assert run_main(train2.main, [*common, "--results-dir", str(killed), "--resume"]) == 0
    assert _log(killed) == _log(ref)
