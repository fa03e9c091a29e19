"""Problem 2 end to end on tiny data: CLI smoke runs, resume (also after SIGKILL), determinism, bad input."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_main, run_script_here
from PIL import Image

from common.training import strip_timing
from problem2 import baseline, evaluate, train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROGRESS": "0", "MPLBACKEND": "Agg"}


def run_script(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"problem2/{script}", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=timeout)


def log_of(results: Path) -> list[dict]:
    return strip_timing(json.loads((results / "training_log.json").read_text()))


def test_cli_smoke_train_evaluate_baseline(tiny_data, tmp_path, capsys):
    res = tmp_path / "res"
    r = run_script_here(capsys, "problem2/train.py", "--data-dir", str(tiny_data), "--results-dir", str(res),
                        "--epochs", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    for f in ("heatmap_model.pth", "regression_model.pth", "last.pth", "training_log.json",
              "heatmap_snapshots.pt", "config.json"):
        assert (res / f).is_file(), f
    log = json.loads((res / "training_log.json").read_text())
    assert [(x["model"], x["epoch"]) for x in log] == [("heatmap", 1), ("regression", 1)]
    assert set(log[0]["val"]["pck"]) == {"0.05", "0.1", "0.15", "0.2"}
    assert set(log[0]["time"]) == {"train_s", "val_s", "cpu_s"}

    r = run_script_here(capsys, "problem2/evaluate.py", "--data-dir", str(tiny_data), "--results-dir", str(res),
                        "--device", "cpu")
    assert r.returncode == 0, r.stderr
    m = json.loads((res / "metrics.json").read_text())
    assert set(m["methods"]) == {"heatmap", "regression"}
    assert set(m["decoders"]) == {f"{d}, {p}" for d in ("dark", "taylor", "quarter", "argmax")
                                  for p in ("hands jointly", "each map alone")}
    assert len(m["ceiling"]["curve"]) == 101 and set(m["failures"]) == {
        "heatmap_right_regression_wrong", "regression_right_heatmap_wrong", "both_wrong"}
    # The evaluation of the saved models reproduces the validation numbers logged in training (the same path).
    for rec in log:
        r = m["methods"][rec["model"]]
        assert r["epoch"] == rec["epoch"] and r["val_loss"] == pytest.approx(rec["val"]["loss"], rel=1e-6)
        assert r["metrics"]["pck"] == rec["val"]["pck"]
        assert r["metrics"]["swap_invariant"]["pck"] == rec["val"]["pck_swap_invariant"]
        assert r["metrics"]["auc"] == pytest.approx(rec["val"]["auc"], abs=1e-9)
        assert r["metrics"]["mean_px_error"] == pytest.approx(rec["val"]["mean_px_error"], rel=1e-6)
    for fig in ("pck_curves", "sample_predictions", "predicted_heatmaps", "heatmaps_during_training",
                "failure_cases", "training_curves"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 0, fig
    assert "hand-ambiguity ceiling" in (res / "summary.md").read_text()

    r = run_script_here(capsys, "problem2/baseline.py", "--data-dir", str(tiny_data), "--results-dir", str(res),
                        "--epochs", "1", "--device", "cpu", "--sigmas", "1", "2", "--resolutions", "32", "64",
                        "--no-run-figures")
    assert r.returncode == 0, r.stderr
    abl = json.loads((res / "ablation.json").read_text())
    assert abl["families"] == {"sigma": ["p2-sigma1", "p2-heatmap"], "resolution": ["p2-res32", "p2-heatmap"],
                               "skip": ["p2-heatmap", "p2-noskip"]}  # the study's names, one per run
    assert len(abl["runs"]) == 4 and (res / "figures" / "ablation.png").is_file()
    for key, r in abl["runs"].items():  # the study's folders: a study.py on this folder reuses these runs
        assert Path(r["dir"]) == res / "study" / key / "seed641" and (Path(r["dir"]) / "metrics.json").is_file()
    assert not list((res / "study").rglob("*.png"))  # --no-run-figures: the runs' numbers only
    summary = (res / "summary.md").read_text()
    assert "## Ablations" in summary and "## Evaluation" in summary  # one summary, both sections


def test_resume_and_determinism(tiny_data, tmp_path, capsys):
    common = ["--data-dir", str(tiny_data), "--device", "cpu", "--epochs"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_main(train.main, [*common, "2", "--results-dir", str(a)]) == 0
    assert run_main(train.main, [*common, "1", "--results-dir", str(b)]) == 0
    assert run_main(train.main, [*common, "2", "--results-dir", str(b), "--resume"]) == 0
    # Same seed on CPU: b's first epoch repeats a's (determinism) and its resumed second epoch continues it exactly:
    # byte-identical logs apart from timing, and identical weights.
    assert json.dumps(log_of(a)) == json.dumps(log_of(b)) and len(log_of(a)) == 4
    for name in ("heatmap_model.pth", "regression_model.pth"):  # the best epochs' weights ...
        wa, wb = (torch.load(d / name, weights_only=True)["model"] for d in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    la, lb = (torch.load(d / "last.pth", weights_only=True) for d in (a, b))  # ... and the last epoch's, every model
    assert la.keys() == lb.keys() and la["epoch"] == lb["epoch"] == 2
    tensors = lambda obj: [x for x in torch.utils._pytree.tree_leaves(obj) if isinstance(x, torch.Tensor)]  # noqa: E731
    assert tensors(la) and all(torch.equal(x, y) for x, y in zip(tensors(la), tensors(lb), strict=True))
    # Each model has its own seed and RNG stream: training one alone gives the same model as training both.
    d = tmp_path / "d"
    assert run_main(train.main, [*common, "2", "--results-dir", str(d), "--model", "regression"]) == 0
    assert log_of(d) == [r for r in log_of(a) if r["model"] == "regression"]
    # Resuming a finished run trains nothing and keeps the log.
    assert run_main(train.main, [*common, "2", "--results-dir", str(a), "--resume"]) == 0
    assert log_of(a) == log_of(b)
    # A resumed run keeps its checkpoint's settings; only epochs, device and folders may change.
    capsys.readouterr()
    assert run_main(train.main, [*common, "3", "--results-dir", str(a), "--resume", "--lr", "0.01",
                                 "--model", "heatmap"]) == 0
    assert "resuming with the checkpoint's model, lr" in capsys.readouterr().err
    assert json.loads((a / "config.json").read_text())["lr"] == 0.001
    assert [(r["model"], r["epoch"]) for r in log_of(a)][-2:] == [("regression", 2), ("regression", 3)]


def test_sigkill_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    common = ["--data-dir", str(tiny_data), "--device", "cpu", "--epochs", "3", "--model", "heatmap"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert run_main(train.main, [*common, "--results-dir", str(ref)]) == 0
    proc = subprocess.Popen([sys.executable, "problem2/train.py", *common, "--results-dir", str(killed)], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # right after epoch 1's checkpoint, possibly mid-write of the log
    assert proc.wait() == -signal.SIGKILL  # killed before it could finish
    assert torch.load(killed / "last.pth", weights_only=True)["epoch"] < 3
    for f in killed.glob("*.pth"):  # whatever the moment of the kill, no file is truncated
        torch.load(f, weights_only=True)
    if (killed / "training_log.json").exists():
        json.loads((killed / "training_log.json").read_text())
    assert run_main(train.main, [*common, "--results-dir", str(killed), "--resume"]) == 0
    assert log_of(killed) == log_of(ref)


# --- bad input: one line naming the file, exit status 2, no traceback, nothing overwritten -------------------------

def _copy_data(tiny_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(tiny_data / "keypoints", dst / "keypoints")
    return dst


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _first_image(data: Path) -> Path:
    return data / "keypoints" / "train" / json.loads(
        (data / "keypoints" / "train_annotations.json").read_text())["images"][0]["file_name"]


ANN = "keypoints/train_annotations.json"
BAD_DATA = {
    "missing annotation file": (lambda d: (d / ANN).unlink(), ANN),
    "missing images folder": (lambda d: shutil.rmtree(d / "keypoints" / "train"), "keypoints/train"),
    "invalid json": (lambda d: (d / ANN).write_text("{not json"), ANN),
    "missing key": (lambda d: _edit_json(d / ANN, lambda j: j.pop("images")), ANN),
    "missing image file": (lambda d: _first_image(d).unlink(), "000000.png"),
    "truncated png": (lambda d: _first_image(d).write_bytes(_first_image(d).read_bytes()[:100]), "000000.png"),
    "not an image": (lambda d: _first_image(d).write_text("hello"), "000000.png"),
    "wrong image size": (lambda d: Image.new("L", (64, 64), 255).save(_first_image(d)), "000000.png"),
    "keypoint outside the image": (
        lambda d: _edit_json(d / ANN, lambda j: j["images"][0].update(keypoints=[[200, 5]] * 5)), ANN),
    "wrong number of keypoints": (
        lambda d: _edit_json(d / ANN, lambda j: j["images"][1].update(keypoints=[[5, 5]] * 4)), ANN),
    "non-numeric keypoints": (
        lambda d: _edit_json(d / ANN, lambda j: j["images"][1].update(keypoints="abc")), ANN),
    "empty split": (lambda d: _edit_json(d / ANN, lambda j: j.update(images=[])), ANN),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_clear_line(case, tiny_data, tmp_path, capsys):
    data = _copy_data(tiny_data, tmp_path)
    spoil, names = BAD_DATA[case]
    spoil(data)
    res = tmp_path / "res"
    res.mkdir()
    (res / "training_log.json").write_text("earlier results")
    code = run_main(train.main, ["--data-dir", str(data), "--results-dir", str(res), "--epochs", "1",
                                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert names in err and err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in res.iterdir()) == ["training_log.json"]
    assert (res / "training_log.json").read_text() == "earlier results"


def test_other_image_mode_is_converted_with_a_note(tiny_data, tmp_path, capsys):
    from problem2.dataset import load_split

    data = _copy_data(tiny_data, tmp_path)
    img = _first_image(data)
    Image.open(img).convert("RGB").save(img)
    ds = load_split(data, "train")
    assert "converted 1 image" in capsys.readouterr().err
    assert ds.images.shape == (16, 1, 128, 128)


@pytest.mark.parametrize("argv,flag", [(["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
                                       (["--lr", "0"], "--lr"), (["--device", "tpu9"], "--device"),
                                       (["--sigma", "-1"], "--sigma"), (["--dropout", "1"], "--dropout"),
                                       (["--model", "simcc", "--simcc-split-ratio", "0.5"], "--simcc-split-ratio")])
def test_bad_cli_values(argv, flag, tmp_path, capsys):
    assert run_main(train.main, ["--results-dir", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and not (tmp_path / "r").exists()


def test_limits_and_the_recorded_command(tiny_data, tmp_path):
    res = tmp_path / "with space"  # the recorded command must quote it to be re-runnable
    args = ["--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu"]
    train_args = [*args, "--model", "regression", "--epochs", "1", "--limit-train", "4", "--limit-val", "3"]
    assert run_main(train.main, train_args) == 0
    config = json.loads((res / "config.json").read_text())
    assert (config["limit_train"], config["limit_val"]) == (4, 3)
    assert shlex.split(config["command"]) == ["python", "problem2/train.py", *train_args]
    log = json.loads((res / "training_log.json").read_text())
    assert log[0]["val"]["pck"] == evaluate_pck_of(args, res)  # the checkpoint's 3 validation images
    assert json.loads((res / "metrics.json").read_text())["num_images"] == 3
    assert run_main(evaluate.main, [*args, "--limit-val", "0"]) == 0  # all of them
    metrics = json.loads((res / "metrics.json").read_text())
    assert metrics["num_images"] == 8
    assert shlex.split(metrics["command"]) == ["python", "problem2/evaluate.py", *args, "--limit-val", "0"]


def evaluate_pck_of(args: list[str], res: Path) -> dict:
    assert run_main(evaluate.main, args) == 0
    return json.loads((res / "metrics.json").read_text())["methods"]["regression"]["metrics"]["pck"]


@pytest.mark.parametrize("script", ["train", "evaluate", "baseline"])
def test_results_dir_that_is_a_file(script, tiny_data, tmp_path, capsys):
    not_a_dir = tmp_path / "results.txt"
    not_a_dir.write_text("keep me")
    main = {"train": train.main, "evaluate": evaluate.main, "baseline": baseline.main}[script]
    assert run_main(main, ["--data-dir", str(tiny_data), "--results-dir", str(not_a_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --results-dir {not_a_dir}: is a file, not a folder\n"
    assert not_a_dir.read_text() == "keep me"


def test_resume_without_a_checkpoint_is_an_error(tiny_data, tmp_path, capsys):
    res = tmp_path / "res"
    assert run_main(train.main, ["--data-dir", str(tiny_data), "--results-dir", str(res), "--epochs", "1",
                                 "--device", "cpu", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--resume: {res / 'last.pth'} not found, nothing to resume" in err and len(err.splitlines()) == 1
    assert not res.exists()


def test_bad_checkpoints(tiny_data, tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    args = ["--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu"]
    assert run_main(evaluate.main, args) == 2  # no checkpoint at all
    assert "heatmap_model.pth" in capsys.readouterr().err
    torch.save({"problem": "problem1", "model": {}, "config": {}}, res / "heatmap_model.pth")
    assert run_main(evaluate.main, args) == 2  # the other problem's checkpoint
    assert "problem1" in capsys.readouterr().err
    assert run_main(train.main, [*args, "--epochs", "1", "--model", "heatmap"]) == 0
    ckpt = torch.load(res / "heatmap_model.pth", weights_only=True)
    ckpt["config"]["skip"] = False  # the weights no longer fit the model it describes
    torch.save(ckpt, res / "heatmap_model.pth")
    capsys.readouterr()
    assert run_main(evaluate.main, args) == 2
    err = capsys.readouterr().err
    assert "heatmap_model.pth" in err and "does not fit" in err and "Traceback" not in err
    (res / "heatmap_model.pth").write_bytes(b"garbage")
    assert run_main(evaluate.main, args) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert not (res / "metrics.json").exists()


def test_bad_input_as_a_real_process(tiny_data, tmp_path):
    data = _copy_data(tiny_data, tmp_path)
    (data / ANN).write_text("[1, 2")
    for script in ("train.py", "baseline.py"):
        r = run_script(script, "--data-dir", str(data), "--results-dir", str(tmp_path / "r"), "--epochs", "1")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "train_annotations.json" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


def test_images_match_the_generator(tiny_data):
    """The uint8 images in memory are the PNGs, pixel for pixel."""
    from problem2.dataset import load_split

    ds = load_split(tiny_data, "val")
    png = np.asarray(Image.open(tiny_data / "keypoints" / "val" / ds.file_names[0]))
    assert np.array_equal(ds.images[0, 0].numpy(), png)


def test_baseline_plan_dedupes_the_default_run():
    cfg = baseline.AblationConfig()
    families, runs, aliases = baseline.plan(cfg)
    assert len(runs) == 7 and list(families) == ["sigma", "resolution", "skip"]
    assert "p2-heatmap" in families["sigma"] and "p2-heatmap" in families["skip"]
    assert aliases["p2-sigma2"] == aliases["p2-res64"] == aliases["p2-skip"] == "p2-heatmap"
    assert {runs[n]["heatmap_size"] for n in families["resolution"]} == {32, 64, 128}


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler")
def test_compile_trains_the_same_model(tiny_data, tmp_path):
    """``--compile`` is only an execution strategy: one epoch gives the eager run's losses to rounding.

    (The heatmap model: the regression model's dropout draws different masks when compiled.)"""
    common = ["--data-dir", str(tiny_data), "--device", "cpu", "--epochs", "1", "--model", "heatmap"]
    assert run_main(train.main, [*common, "--results-dir", str(tmp_path / "eager")]) == 0
    assert run_main(train.main, [*common, "--results-dir", str(tmp_path / "compiled"), "--compile"]) == 0
    eager, compiled = log_of(tmp_path / "eager"), log_of(tmp_path / "compiled")
    for a, b in zip(eager, compiled, strict=True):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-3)
        assert a["val"]["loss"] == pytest.approx(b["val"]["loss"], rel=1e-3)
