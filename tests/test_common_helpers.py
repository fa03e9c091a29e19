"""The shared helpers both problems use for reports, command lines, output folders, data and figures."""
from __future__ import annotations

import json
import math
import shlex

import pytest

from common.cli import command_line, require_output_dir, require_resume_checkpoint
from common.data import ensure_data
from common.errors import UserError
from common.plotting import image_grid, pyplot, save_figure
from common.report import fmt, markdown_table, nan_to_none


def test_markdown_table_known_answer_and_ragged_rows():
    assert markdown_table(["class", "AP"], [["circle", fmt(0.8976)], ["square", fmt(float("nan"))]]) == [
        "| class | AP |", "|---|---|", "| circle | 0.898 |", "| square | n/a |"]
    assert markdown_table(["a"], []) == ["| a |", "|---|"]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])


def test_fmt_and_nan_to_none():
    assert (fmt(None), fmt(float("nan")), fmt(0.5), fmt(1 / 3, 1), fmt(2)) == ("n/a", "n/a", "0.500", "0.3", "2.000")
    obj = {"a": float("nan"), "b": [1.0, (float("nan"), 2)], "_fig": [float("nan")], "c": {"d": float("nan")}}
    assert nan_to_none(obj) == {"a": None, "b": [1.0, [None, 2]], "_fig": [None], "c": {"d": None}}
    clean = nan_to_none(obj, drop_private=True)
    assert clean == {"a": None, "b": [1.0, [None, 2]], "c": {"d": None}}
    assert "NaN" not in json.dumps(clean) and math.isnan(obj["a"])  # the input is left as it was


def test_command_line_is_quoted_and_round_trips():
    argv = ["--data-dir", "my data", "--results-dir", "it's/here", "--resume", "--epochs", "2"]
    cmd = command_line("problem1/train.py", argv)
    assert shlex.split(cmd) == ["python", "problem1/train.py", *argv]
    assert command_line("problem1/train.py", argv, drop=("--resume",)) == (
        "python problem1/train.py --data-dir 'my data' --results-dir 'it'\"'\"'s/here' --epochs 2")
    assert command_line("bench.py", []) == "python bench.py"


def test_require_output_dir(tmp_path):
    assert require_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # created later
    assert not (tmp_path / "new").exists()
    assert require_output_dir(tmp_path) == tmp_path
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UserError, match=f"^--results-dir {f}: is a file, not a folder$"):
        require_output_dir(f)
    with pytest.raises(UserError, match=f"^--out {f / 'x' / 'y'}: cannot be created: {f} is a file, not a folder$"):
        require_output_dir(f / "x" / "y", "--out")


def test_require_resume_checkpoint(tmp_path):
    with pytest.raises(UserError, match="--resume: .*last.pth not found, nothing to resume"):
        require_resume_checkpoint(tmp_path)
    (tmp_path / "last.pth").write_bytes(b"")
    assert require_resume_checkpoint(tmp_path) == tmp_path / "last.pth"


def test_ensure_data_generates_only_where_it_should(tmp_path, monkeypatch):
    import common.synthetic as synthetic

    generated = []
    monkeypatch.setattr(synthetic, "generate", lambda d, only=None: generated.append(d if only is None else (d, only)))
    ensure_data(tmp_path / "missing", is_default=False, dataset="detection")  # missing: generate
    (tmp_path / "empty").mkdir()
    ensure_data(tmp_path / "empty", is_default=False, dataset="keypoints")  # empty: generate
    assert generated == [tmp_path / "missing", tmp_path / "empty"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("")
    ensure_data(other, is_default=False, dataset="detection")  # someone's folder: left alone
    (other / "detection").mkdir()
    ensure_data(other, is_default=True, dataset="detection")  # the data is there
    assert len(generated) == 2
    ensure_data(other, is_default=True, dataset="keypoints")  # the default folder lacks this dataset: generate it
    assert generated[-1] == (other, "keypoints")  # and only it: detection/ may be the user's own
    (other / "keypoints").mkdir()
    (other / "keypoints" / "train_annotations.json").write_text("{}")
    ensure_data(other / "keypoints", is_default=True, dataset="keypoints")  # the dataset folder itself
    assert len(generated) == 3
    with pytest.raises(UserError, match="is a file, not a folder"):
        ensure_data(other / "notes.txt", is_default=True, dataset="detection")


def test_image_grid_and_save_figure_close(tmp_path):
    plt = pyplot()
    before = set(plt.get_fignums())
    fig, axes = image_grid(7, 3, (2.0, 1.5))
    assert len(axes) == 7 and len(fig.axes) == 9  # 3 rows of 3, the last two panels off
    assert [ax.axison for ax in fig.axes] == [True] * 7 + [False] * 2
    assert tuple(fig.get_size_inches()) == (6.0, 4.5)
    path = save_figure(fig, tmp_path / "figs" / "grid.png")
    assert path.stat().st_size > 0 and set(plt.get_fignums()) == before  # written and closed



def test_a_closed_output_pipe_ends_a_script_quietly():
    """`study.py --list | head -1`: the reader leaves early; the script stops with 141 and no traceback. The script
    here writes 10 MB, far more than a pipe buffers, so its writes fail after head exits."""
    import subprocess
    import sys
    from pathlib import Path

    code = "from common.errors import run_cli\nrun_cli(lambda: [print('x' * 99) for _ in range(100_000)])"
    cmd = f"set -o pipefail; {shlex.quote(sys.executable)} -c {shlex.quote(code)} | head -1"
    r = subprocess.run(["bash", "-c", cmd], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout == "x" * 99 + "\n"
    assert (r.returncode, r.stderr) == (141, "")


def test_fp32_on_cuda_is_ieee_fp32_not_tf32(monkeypatch):
    """cuDNN's default lets fp32 convolutions run in TF32 on Ampere and later: a CUDA run recorded as fp32 must not."""
    import torch

    from common.runtime import exact_fp32_on_cuda, pick_device

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    try:
        exact_fp32_on_cuda()
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        # and every script gets it from picking the device (asked here without touching a GPU)
        conv.fp32_precision, matmul.fp32_precision = before
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert pick_device("auto").type == "cuda"
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def test_resume_restores_only_the_gpus_this_machine_has(monkeypatch):
    """A checkpoint written on a machine with more GPUs holds one CUDA RNG state per GPU there: resuming on fewer
    restores those that exist instead of failing on the first missing device (asked without touching a GPU)."""
    import torch

    from common.runtime import rng_state, set_rng_state

    state = rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((i, s.sum().item())))
    set_rng_state(state)
    assert restored == [(0, 0)]
