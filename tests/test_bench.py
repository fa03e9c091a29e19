"""bench.py runs the real code paths of both problems and reports every promised quantity."""
from __future__ import annotations

import json

import bench


def test_bench_tiny_json(tiny_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--problem", "all", "--device", "cpu", "--steps", "1", "--warmup", "0",
                "--data-dir", str(tiny_data), "--json", str(out)])
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"problem1", "problem2 heatmap", "problem2 regression"}
    for row in doc["results"].values():
        assert row["pure_model_step"]["images_per_s"] > 0 and row["real_training_step"]["images_per_s"] > 0
        assert row["non_model_ms_per_step"] > 0 and row["peak_memory_mb"] > 0
        # the ratios are what the table reports
        ratio = row["pure_model_step"]["s_per_step"] and row["real_training_step"]["s_per_step"] / \
            row["pure_model_step"]["s_per_step"]
        assert abs(ratio - row["real_over_pure"]) < 1e-9
    assert doc["meta"]["device"] == "cpu"
    assert "| problem1 |" in capsys.readouterr().out


def test_bench_compare_layouts_rows(tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--problem", "2", "--device", "cpu", "--steps", "1", "--warmup", "0", "--compare-layouts",
                "--data-dir", str(tiny_data), "--json", str(out)])
    rows = json.loads(out.read_text())["results"]
    layouts = ("channels_last", "contiguous")
    assert set(rows) == {f"problem2 {m} {f}" for m in ("heatmap", "regression") for f in layouts}
