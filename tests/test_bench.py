"""bench.py runs the real code paths of both problems and reports every promised quantity."""
from __future__ import annotations

import contextlib
import json
import shlex
import time

import pytest
import torch

import bench
from common.errors import UserError
from common.machine import run_machine

ROWS = ("pure_model_step", "real_training_step", "pure_inference_val", "evaluation_val")


def test_bench_tiny_json(tiny_data, tmp_path, capsys):
    """Every row of both problems, at a batch of 2 (the specification's 16 and 32 make this test 5 times slower; that
    they are the default is checked below)."""
    out = tmp_path / "bench results" / "bench.json"  # a space: the recorded command must quote it
    argv = ["--problem", "all", "--device", "cpu", "--steps", "1", "--warmup", "0", "--batch-size", "2",
            "--data-dir", str(tiny_data), "--json", str(out)]
    bench.main(argv)
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"problem1", "problem2 heatmap", "problem2 regression"}
    for row in doc["results"].values():
        assert set(ROWS) <= set(row) and row["batch_size"] == 2
    assert doc["meta"]["device"] == "cpu"
    assert doc["meta"]["machine"] == run_machine("cpu")  # the report names the machine each benchmark ran on
    assert shlex.split(doc["meta"]["command"]) == ["python", "bench.py", *argv]  # re-runnable as recorded
    assert "| problem1 |" in capsys.readouterr().out


def test_without_batch_size_each_problem_times_its_specified_batch(tiny_data, monkeypatch):
    """``bench.py`` without ``--batch-size`` times each problem at the batch its training uses: 16 images for the
    detector, 32 for the keypoint models (the timing itself, here stopped once its batch size is known, is tested
    above and below)."""
    from problem1.config import Config as Config1
    from problem2.config import Config as Config2

    class Timed(Exception):
        pass

    def record(model, opt, amp_ctx, batch_size, *args, **kwargs):
        raise Timed(batch_size)

    monkeypatch.setattr(bench, "bench_case", record)
    for problem, expected in (("1", Config1().batch_size), ("2", Config2().batch_size)):
        with pytest.raises(Timed) as got:
            bench.main(["--problem", problem, "--device", "cpu", "--data-dir", str(tiny_data)])
        assert got.value.args == (expected,)
    assert (Config1().batch_size, Config2().batch_size) == (16, 32)


def test_each_row_times_its_own_path():
    """Every path sleeps a known, different time: each row must be at least its own sleep (``time.sleep`` never
    returns early), so a row timing the wrong callable, or dividing by the wrong number of calls, fails; and the
    warm-up and timed calls are counted exactly."""
    calls = {"real": 0, "non_model": 0, "eval": 0}
    model = torch.nn.Linear(2, 1)

    def real_batch(i):
        calls["real"] += 1
        time.sleep(0.03)
        return (torch.zeros(4, 2),)

    def non_model(i):
        calls["non_model"] += 1
        time.sleep(0.01)

    def full_eval():
        calls["eval"] += 1
        time.sleep(0.05)

    r = bench.bench_case(model, torch.optim.SGD(model.parameters(), lr=0.1), contextlib.nullcontext, 4,
                         torch.zeros(4, 2), fake_loss=lambda out: out.sum(), real_batch=real_batch,
                         real_loss=lambda out, batch: out.sum(), non_model=non_model,
                         infer_batches=lambda: [torch.zeros(4, 2)], full_eval=full_eval, n_val=8,
                         device=torch.device("cpu"), steps=5, warmup=2)
    assert calls == {"real": 5 + 2, "non_model": 20 + 2, "eval": 1 + 1}  # non-model: at least 20 steps
    assert r["real_training_step"]["s_per_step"] >= 0.03
    assert r["non_model_ms_per_step"] >= 10.0
    assert r["evaluation_val"]["s_per_step"] >= 0.05
    assert r["real_training_step"]["images_per_s"] <= 4 / 0.03 and r["evaluation_val"]["images_per_s"] <= 8 / 0.05


def test_json_path_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(UserError, match="is a folder, not a file"):
        bench.main(["--json", str(tmp_path), "--data-dir", str(tmp_path / "never")])
    with pytest.raises(UserError, match="is a file, not a folder"):
        bench.main(["--json", str(taken / "b.json"), "--data-dir", str(tmp_path / "never")])
    with pytest.raises(UserError, match="--batch-size must be >= 1"):
        bench.main(["--batch-size", "0", "--data-dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_bench_compare_layouts_rows(tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--problem", "2", "--device", "cpu", "--steps", "1", "--warmup", "0", "--compare-layouts",
                "--batch-size", "4", "--data-dir", str(tiny_data), "--json", str(out)])
    rows = json.loads(out.read_text())["results"]
    layouts = ("channels_last", "contiguous")
    assert set(rows) == {f"problem2 {m} {f}" for m in ("heatmap", "regression") for f in layouts}
    assert {r["batch_size"] for r in rows.values()} == {4}


@pytest.mark.parametrize("native", [True, False])
def test_compare_amp_times_both_precisions(native, tmp_path, monkeypatch):
    import common.runtime
    from common.synthetic import generate

    monkeypatch.setattr(common.runtime, "cpu_has_native_bf16", lambda: native)
    generate(tmp_path / "data", num_train=4, num_val=2, only="keypoints")  # bf16 emulated on most CPUs: slow
    out = tmp_path / "amp.json"
    bench.main(["--problem", "2", "--device", "cpu", "--steps", "1", "--warmup", "0", "--data-dir",
                str(tmp_path / "data"), "--compare-amp", "--batch-size", "2", "--json", str(out)])
    doc = json.loads(out.read_text())
    names = [f"problem2 {m} {p}" for m in ("heatmap", "regression") for p in ("fp32", "bf16")]
    assert sorted(doc["results"]) == sorted(names)
    assert [doc["results"][n]["precision"] for n in names] == ["fp32", "bf16" if native else "fp32"] * 2
    assert sorted(doc["amp_speedups"]) == (["problem2 heatmap", "problem2 regression"] if native else [])


def test_amp_speedups_known_answer():
    def row(precision, train, evaluation):
        return {"precision": precision, "real_training_step": {"images_per_s": train},
                "evaluation_val": {"images_per_s": evaluation}}

    rows = {"p fp32": row("fp32", 10.0, 40.0), "p bf16": row("bf16", 25.0, 50.0),
            "q fp32": row("fp32", 10.0, 40.0), "q bf16": row("fp32", 10.0, 40.0),  # bf16 unavailable: no ratio
            "r": row("fp32", 1.0, 1.0)}
    assert bench.amp_speedups(rows) == {"p": {"real_training_step": 2.5, "evaluation_val": 1.25}}
