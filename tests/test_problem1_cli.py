"""Problem 1 end to end: train one tiny epoch and evaluate through the CLI; resume equals an uninterrupted run."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_script_here

from common.errors import UserError
from common.training import strip_timing
from problem1.config import Config
from problem1.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--limit-train", "4", "--batch-size", "2", "--limit-val", "4", "--eval-batch-size", "4", "--device", "cpu"]
FIGURES = ["detections.png", "pr_curves.png", "anchor_coverage.png", "scale_specialisation.png", "feature_maps.png",
           "confusion_matrix.png", "training_curves.png"]


def _tiny_config(data: Path, results: Path, epochs: int) -> Config:
    return Config(data_dir=str(data), results_dir=str(results), epochs=epochs, limit_train=4, batch_size=2,
                  limit_val=4, eval_batch_size=4, device="cpu")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, f"problem1/{script}", *args], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="session")
def smoke(tiny_data, tmp_path_factory) -> Path:
    """``train.py`` for one epoch, then ``evaluate.py`` on its best checkpoint, as a user would run them."""
    results = tmp_path_factory.mktemp("p1_smoke")
    _run("train.py", "--epochs", "1", "--data-dir", str(tiny_data), "--results-dir", str(results), *TINY)
    _run("evaluate.py", "--data-dir", str(tiny_data), "--results-dir", str(results), "--device", "cpu")
    return results


def test_help(capsys):
    for script, flags in (("train.py", ["--epochs", "--batch-size", "--lr", "--data-dir", "--results-dir", "--device",
                                        "--seed", "--resume", "--force-match", "--no-force-match"]),
                          ("evaluate.py", ["--data-dir", "--results-dir", "--checkpoint"])):
        r = run_script_here(capsys, f"problem1/{script}", "--help")
        assert r.returncode == 0 and all(f in r.stdout for f in flags), (script, r.stdout)


@pytest.mark.xdist_group("p1_smoke")
def test_train_outputs(smoke, tiny_data):
    for name in ("training_log.json", "best_model.pth", "last.pth", "config.json"):
        assert (smoke / name).is_file(), name
    # config.json records the command, shell-quoted and re-runnable: it splits back into the arguments given
    command = shlex.split(json.loads((smoke / "config.json").read_text())["command"])
    assert command == ["python", "problem1/train.py", "--epochs", "1", "--data-dir", str(tiny_data),
                       "--results-dir", str(smoke), *TINY]
    log = json.loads((smoke / "training_log.json").read_text())
    assert len(log) == 1 and log[0]["epoch"] == 1
    rec = log[0]
    losses = {"loss_obj", "loss_cls", "loss_loc", "loss_total"}
    assert set(rec["train"]) == losses and set(rec["val"]) == losses | {"mAP", "ap_per_class"}
    assert 0 <= rec["val"]["mAP"] <= 1 and set(rec["val"]["ap_per_class"]) == {"circle", "square", "triangle"}
    assert rec["time"]["epoch_s"] > 0
    ckpt = torch.load(smoke / "best_model.pth", weights_only=True)
    assert ckpt["problem"] == "problem1" and ckpt["config"]["batch_size"] == 2 and ckpt["epoch"] == 1


@pytest.mark.xdist_group("p1_smoke")
def test_evaluate_outputs(smoke):
    m = json.loads((smoke / "metrics.json").read_text())
    for key in ("mAP", "ap_per_class", "ignore_hidden", "best_f1", "confusion_matrix", "anchor_coverage",
                "scale_specialisation", "coco_ap_50_95", "val_loss", "config"):
        assert key in m, key
    assert len(m["confusion_matrix"]["matrix"]) == 4
    assert len(m["anchor_coverage"]["scales"]) == 3
    # the evaluation of the best checkpoint reproduces the validation numbers logged in training
    log = json.loads((smoke / "training_log.json").read_text())
    assert m["mAP"] == pytest.approx(log[0]["val"]["mAP"], abs=1e-9)
    assert m["val_loss"]["loss_total"] == pytest.approx(log[0]["val"]["loss_total"], rel=1e-6)
    summary = (smoke / "summary.md").read_text()
    assert "AP@0.5" in summary and "Scale specialisation" in summary and "Anchor coverage" in summary
    for name in FIGURES:
        assert (smoke / "visualizations" / name).stat().st_size > 1000, name


@pytest.mark.xdist_group("p1_smoke")
def test_resume_equals_uninterrupted_run_and_is_deterministic(tiny_data, tmp_path, smoke):
    straight = train(_tiny_config(tiny_data, tmp_path / "a", 2))
    train(_tiny_config(tiny_data, tmp_path / "b", 1))
    resumed = train(_tiny_config(tiny_data, tmp_path / "b", 2), resume=True)
    assert strip_timing(straight) == strip_timing(resumed)
    on_disk = [json.loads((tmp_path / d / "training_log.json").read_text()) for d in ("a", "b")]
    assert strip_timing(on_disk[0]) == strip_timing(on_disk[1]) and len(on_disk[0]) == 2
    # the CLI run in another process (same seed and config) produced the same first epoch, to the bit
    assert strip_timing(json.loads((smoke / "training_log.json").read_text())) == strip_timing(straight[:1])
    # asking for epochs that are already done trains nothing
    assert train(_tiny_config(tiny_data, tmp_path / "b", 2), resume=True) == resumed


def test_resume_and_evaluate_refuse_bad_checkpoints(tiny_data, tmp_path):
    with pytest.raises(UserError, match="--resume: .*last.pth not found, nothing to resume"):
        train(_tiny_config(tiny_data, tmp_path / "empty", 1), resume=True)
    assert not (tmp_path / "empty").exists()
    from problem1.evaluate import run_evaluation

    other = tmp_path / "other.pth"
    torch.save({"problem": "problem2", "model": {}, "config": {}}, other)
    with pytest.raises(UserError, match="problem2"):
        run_evaluation(other, tiny_data, tmp_path / "r")
    wrong = tmp_path / "wrong.pth"
    torch.save({"problem": "problem1", "model": {"heads.0.pred.weight": torch.zeros(1)}, "config": {}}, wrong)
    with pytest.raises(UserError, match="does not fit"):
        run_evaluation(wrong, tiny_data, tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_results_dir_that_is_a_file_is_a_one_line_error(script, tiny_data, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for results, phrase in ((taken, "is a file"), (taken / "sub", f"cannot be created: {taken} is a file")):
        r = run_script_here(capsys, f"problem1/{script}", "--data-dir", str(tiny_data), "--results-dir", str(results),
                            *(TINY if script == "train.py" else []))
        assert r.returncode == 2, r.stderr
        assert r.stderr == f"error: --results-dir {results}: {phrase}, not a folder\n"
    assert taken.read_text() == "not a folder"


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tiny_data, tmp_path, capsys):
    results = tmp_path / "killed"
    cmd = [sys.executable, "problem1/train.py", "--epochs", "3", "--data-dir", str(tiny_data), "--results-dir",
           str(results), *TINY]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log_path = results / "training_log.json"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # kill as soon as epoch 1 is on disk
        if log_path.is_file() and json.loads(log_path.read_text()):
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert len(json.loads(log_path.read_text())) < 3, "the run finished before it could be killed"
    assert run_script_here(capsys, "problem1/train.py", *cmd[2:], "--resume").returncode == 0
    straight = train(_tiny_config(tiny_data, tmp_path / "straight", 3))
    assert strip_timing(json.loads(log_path.read_text())) == strip_timing(straight)
    assert not list(results.glob(".*.tmp")), "a temporary file was left behind"
