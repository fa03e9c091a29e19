"""The learning-rate schedule shared by the trainers: known values, and a scheduled run resumes exactly."""
from __future__ import annotations

import math

import pytest
import torch

import problem1.train as p1_train
from common.training import build_lr_scheduler, lr_factor, strip_timing, write_log
from problem1.config import Config
from problem1.train import train


def test_lr_factor_known_values():
    cos = lr_factor("cosine", total_steps=10, warmup_steps=2)
    assert [cos(s) for s in (0, 1)] == [0.5, 1.0]  # linear warm-up, reaching the full rate on its last step
    assert cos(2) == 1.0 and cos(6) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0, abs=1e-12)
    assert cos(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cos(12) == pytest.approx(0.0, abs=1e-12)  # past the end it stays at 0, it does not climb back
    const = lr_factor("constant", total_steps=10, warmup_steps=4)
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", 10)


def test_constant_without_warmup_leaves_the_optimiser_alone():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_lr_scheduler(opt, "constant", 100) is None
    sched = build_lr_scheduler(opt, "cosine", 4, 0)
    rates = []
    for _ in range(4):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    c = math.cos(math.pi / 4)
    assert rates == pytest.approx([0.1, 0.1 * (1 + c) / 2, 0.05, 0.1 * (1 - c) / 2])


def test_cosine_run_follows_the_schedule_and_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    def cfg(results: str) -> Config:
        # 4 images in batches of 2: 2 steps per epoch, 2 epochs, the first one warm-up
        return Config(data_dir=str(tiny_data), results_dir=str(tmp_path / results), epochs=2, limit_train=4,
                      batch_size=2, limit_val=4, eval_batch_size=4, device="cpu", lr=0.01, lr_schedule="cosine",
                      warmup_epochs=1)

    straight = train(cfg("a"))
    # the log holds the rate after each epoch's last step: the peak after warm-up, 0 at the end of the run
    assert straight[0]["lr"] == pytest.approx(0.01) and straight[1]["lr"] == pytest.approx(0.0, abs=1e-12)

    # Ctrl-C right after epoch 1 is saved, then --resume: the scheduler's position comes back from last.pth
    def interrupt(path, log):
        write_log(path, log)
        raise KeyboardInterrupt

    monkeypatch.setattr(p1_train, "write_log", interrupt)
    with pytest.raises(SystemExit):
        train(cfg("b"))
    monkeypatch.setattr(p1_train, "write_log", write_log)
    resumed = train(cfg("b"), resume=True)
    assert len(resumed) == 2 and strip_timing(resumed) == strip_timing(straight)
