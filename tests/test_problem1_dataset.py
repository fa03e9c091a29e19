"""Problem 1 data: shapes and formats, the fast batch path, and one-line errors on bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_script_here
from torch.utils.data import DataLoader

from common.errors import UserError
from problem1.dataset import ShapeDetectionDataset, detection_collate, iterate_batches, load_split

ROOT = Path(__file__).resolve().parents[1]


def test_items_and_collate(tiny_data):
    ds = load_split(tiny_data, "train")
    assert len(ds) == 16 and ds.images.dtype == torch.uint8 and ds.images.shape == (16, 3, 224, 224)
    image, target = ds[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert set(target) >= {"boxes", "labels", "visibility"}
    assert target["boxes"].shape[1] == 4 and target["labels"].dtype == torch.long
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()  # xyxy corners
    ann = json.loads((tiny_data / "detection" / "train_annotations.json").read_text())
    first = [a for a in ann["annotations"] if a["image_id"] == ann["images"][0]["id"]]
    assert target["boxes"].tolist() == [a["bbox"] for a in first]  # read as corners, unchanged
    images, targets = next(iter(DataLoader(ds, batch_size=4, collate_fn=detection_collate)))
    assert images.shape == (4, 3, 224, 224) and len(targets) == 4


def test_fast_batch_equals_items(tiny_data):
    ds = load_split(tiny_data, "train")
    idx = torch.tensor([3, 0, 7])
    images, boxes, labels = ds.get_batch(idx)
    for row, i in enumerate(idx.tolist()):
        image, target = ds[i]
        assert torch.equal(images[row], image)
        n = len(target["labels"])
        assert torch.equal(boxes[row, :n], target["boxes"]) and torch.equal(labels[row, :n], target["labels"])
        assert (labels[row, n:] == -1).all()
    assert boxes.shape[1] == max(len(ds.targets[i]["labels"]) for i in idx.tolist())
    # every index exactly once per epoch, reproducibly
    order = torch.cat(list(iterate_batches(16, 5, torch.Generator().manual_seed(1))))
    assert sorted(order.tolist()) == list(range(16))
    assert torch.equal(order, torch.cat(list(iterate_batches(16, 5, torch.Generator().manual_seed(1)))))


def test_image_without_objects(tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    ann_file = data / "detection" / "val_annotations.json"
    ann = json.loads(ann_file.read_text())
    first = ann["images"][0]["id"]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != first]
    ann_file.write_text(json.dumps(ann))
    ds = load_split(data, "val")
    assert ds[0][1]["boxes"].shape == (0, 4)
    _, boxes, labels = ds.get_batch(torch.tensor([0]))
    assert boxes.shape == (1, 0, 4) and labels.shape == (1, 0)


# --------------------------------------------------------------------------------------------- bad input
def _copy(tiny_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(tiny_data / "detection", dst / "detection")
    return dst


def _edit_first_annotation(data: Path, **changes) -> Path:
    ann_file = data / "detection" / "val_annotations.json"
    ann = json.loads(ann_file.read_text())
    ann["annotations"][0].update(changes)
    ann_file.write_text(json.dumps(ann))
    return ann_file


def _break(case: str, data: Path) -> tuple[Path, str]:
    """Apply one fault to the val split; returns the file the message must name and a phrase it must contain."""
    det = data / "detection"
    ann_file = det / "val_annotations.json"
    if case == "missing_annotations":
        ann_file.unlink()
        return ann_file, "not found"
    if case == "missing_images_dir":
        shutil.rmtree(det / "val")
        return det / "val", "not found"
    if case == "invalid_json":
        ann_file.write_text('{"images": [')
        return ann_file, "invalid JSON"
    if case == "missing_key":
        ann_file.write_text(json.dumps({"images": []}))
        return ann_file, "annotations"
    if case == "empty_split":
        ann_file.write_text(json.dumps({"images": [], "annotations": []}))
        return ann_file, "empty split"
    if case == "missing_image":
        name = json.loads(ann_file.read_text())["images"][0]["file_name"]
        (det / "val" / name).unlink()
        return det / "val" / name, "not found"
    if case == "truncated_png":
        name = json.loads(ann_file.read_text())["images"][0]["file_name"]
        path = det / "val" / name
        path.write_bytes(path.read_bytes()[:100])
        return path, "unreadable"
    if case == "wrong_size":
        from PIL import Image

        name = json.loads(ann_file.read_text())["images"][0]["file_name"]
        Image.new("RGB", (100, 80)).save(det / "val" / name)
        return det / "val" / name, "expected 224x224"
    if case == "x2_le_x1":
        return _edit_first_annotation(data, bbox=[50, 50, 40, 80]), "x2 <= x1"
    if case == "outside_image":
        return _edit_first_annotation(data, bbox=[150, 150, 240, 200]), "outside"
    if case == "looks_like_xywh":
        return _edit_first_annotation(data, bbox=[120, 100, 40, 40]), "[x, y, w, h]"
    if case == "unknown_category":
        return _edit_first_annotation(data, category_id=7), "unknown category id 7"
    if case == "annotation_missing_key":
        ann = json.loads(ann_file.read_text())
        del ann["annotations"][0]["bbox"]
        ann_file.write_text(json.dumps(ann))
        return ann_file, "bbox"
    raise AssertionError(case)


BAD_CASES = ["missing_annotations", "missing_images_dir", "invalid_json", "missing_key", "empty_split",
             "missing_image", "truncated_png", "wrong_size", "x2_le_x1", "outside_image", "looks_like_xywh",
             "unknown_category", "annotation_missing_key"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_a_user_error_naming_the_file(case, tiny_data, tmp_path):
    data = _copy(tiny_data, tmp_path)
    path, phrase = _break(case, data)
    with pytest.raises(UserError) as e:
        load_split(data, "val")
    assert str(path) in str(e.value) and phrase in str(e.value)
    assert "\n" not in str(e.value)


def test_mode_is_converted_with_a_note(tiny_data, tmp_path, capsys):
    from PIL import Image

    data = _copy(tiny_data, tmp_path)
    ann = json.loads((data / "detection" / "val_annotations.json").read_text())
    path = data / "detection" / "val" / ann["images"][0]["file_name"]
    Image.open(path).convert("RGBA").save(path)
    ds = ShapeDetectionDataset(data / "detection" / "val", data / "detection" / "val_annotations.json")
    assert ds.images.shape[1] == 3 and "converted 1 image" in capsys.readouterr().err


def test_scripts_exit_2_without_traceback_and_write_nothing(tiny_data, tmp_path, capsys):
    """train.py as a real process (its exit status is the process's), evaluate.py through its main."""
    data = _copy(tiny_data, tmp_path)
    path, phrase = _break("looks_like_xywh", data)
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("old")
    for script, extra in (("train.py", ["--epochs", "1"]), ("evaluate.py", [])):
        argv = ["--data-dir", str(data), "--results-dir", str(results), *extra]
        r = subprocess.run([sys.executable, f"problem1/{script}", *argv], capture_output=True, text=True, cwd=ROOT) \
            if script == "train.py" else run_script_here(capsys, f"problem1/{script}", *argv)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        if script == "evaluate.py":  # no checkpoint here: that is the first fault it reports
            assert "best_model.pth" in r.stderr and "checkpoint not found" in r.stderr
        else:
            assert r.stderr.startswith("error: ") and str(path) in r.stderr and phrase in r.stderr
    assert sorted(p.name for p in results.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("argv,flag", [(["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
                                       (["--lr", "0"], "--lr"), (["--lr", "-1"], "--lr"), (["--device", "tpu"],
                                                                                           "--device")])
def test_invalid_cli_values(argv, flag, tmp_path):
    from problem1.train import main

    with pytest.raises(UserError, match=flag):
        main([*argv, "--data-dir", str(tmp_path / "nothing"), "--results-dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists() and not (tmp_path / "nothing").exists()
