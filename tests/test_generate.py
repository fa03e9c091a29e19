"""The generator reproduces the course's reference data bit for bit."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {
    ("detection", "train", "json"): "ffaf658dcf317f1816d0096508d4cdca677cc7c2b9b9cc245a8106b4f5297aaa",
    ("detection", "train", "pixels"): "fbc08f3f0c0fee27f9bc7fa18ac8382b324e5483ef6683bd667eac7d2402f189",
    ("detection", "val", "json"): "60c182e28469c5bc4896968a1950ed02e64876c3fb319e81f87fe397dcf591c5",
    ("detection", "val", "pixels"): "b38fd9c7e1cf47e8a97949258bff151ce56469fa5ffcf95316fdc26aa7a4f716",
    ("keypoints", "train", "json"): "41f3e2e030b265f5fca13afbae488f479d865647ee556f7ddfc3d6196d3d6b5f",
    ("keypoints", "train", "pixels"): "22b3845b2f5a2fe1a8025972b38b9d555845de3971e127fdd6f0e69182033dbb",
    ("keypoints", "val", "json"): "0a7713ca55fbc38a967ce621a0062d5e5787df1b8396151e55b36ab0f225d004",
    ("keypoints", "val", "pixels"): "1907eb6add8b30b2e05547bdf24f326a3a30f9eabd90cebf79bb29e49444f7d5",
}


def digests(root: Path) -> dict:
    out = {}
    for ds in ("detection", "keypoints"):
        for split in ("train", "val"):
            obj = json.loads((root / ds / f"{split}_annotations.json").read_text())
            out[ds, split, "json"] = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
            h = hashlib.sha256()
            for f in sorted((root / ds / split).glob("*.png")):
                h.update(np.asarray(Image.open(f)).tobytes())
            out[ds, split, "pixels"] = h.hexdigest()
    return out


@pytest.fixture(scope="session")
def reference_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    generate(out)  # defaults: 1000/200, seed 641 (about 2 s)
    return out


@pytest.mark.xdist_group("reference_data")
def test_reference_digests(reference_data):
    assert digests(reference_data) == REFERENCE


@pytest.mark.xdist_group("reference_data")
def test_layout_and_ids(reference_data):
    det = json.loads((reference_data / "detection" / "val_annotations.json").read_text())
    assert det["images"][0] == {"id": 1000, "file_name": "001000.png", "width": 224, "height": 224}
    assert (reference_data / "detection" / "val" / "001000.png").is_file()
    train = json.loads((reference_data / "detection" / "train_annotations.json").read_text())
    # annotation ids run on from train into val
    assert det["annotations"][0]["id"] == train["annotations"][-1]["id"] + 1
    kp = json.loads((reference_data / "keypoints" / "val_annotations.json").read_text())
    assert kp["num_keypoints"] == 5 and len(kp["images"][0]["keypoints"]) == 5


@pytest.mark.xdist_group("reference_data")
def test_only_keypoints_matches_full_run(tmp_path, reference_data):
    """``--only keypoints`` still consumes the detection draws, so the keypoint set is unchanged."""
    generate(tmp_path, num_train=1000, num_val=200, only="keypoints")
    assert not (tmp_path / "detection").exists()
    a = (tmp_path / "keypoints" / "val_annotations.json").read_text()
    b = (reference_data / "keypoints" / "val_annotations.json").read_text()
    assert a == b


def test_other_seed_and_counts_differ(tmp_path):
    generate(tmp_path / "a", num_train=3, num_val=2, seed=1)
    generate(tmp_path / "b", num_train=3, num_val=2, seed=2)
    a = json.loads((tmp_path / "a" / "detection" / "train_annotations.json").read_text())
    b = json.loads((tmp_path / "b" / "detection" / "train_annotations.json").read_text())
    assert len(a["images"]) == 3 and a != b


def test_cli_help_and_bad_value(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "generate_datasets.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--num_train" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "generate_datasets.py"), "--num_train", "-1",
                        "--output_dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--num_train" in r.stderr
