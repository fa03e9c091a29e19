"""The synthetic detection and keypoint datasets of the study, drawn and written to disk (``generate``); the
command line is ``generate_datasets.py``.

The algorithm reproduces the course's reference data bit for bit (tests/test_generate.py checks the
published digests). Two details matter for that and must not be "cleaned up":

* One ``random.Random`` stream serves both datasets, detection first, then keypoints, train before
  val. Every draw happens in the documented order, so changing any draw shifts all later data.
* ``numpy.random`` is seeded too (the reference does so) but never drawn from.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.progress import progress

DET_SIZE = 224
KP_SIZE = 128
# (category id, name, inclusive size range in pixels, fill colour)
SHAPES = [
    (0, "circle", (16, 32), (255, 0, 0)),
    (1, "square", (48, 96), (0, 255, 0)),
    (2, "triangle", (96, 192), (0, 0, 255)),
]
KEYPOINT_NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
MAX_PLACEMENT_ATTEMPTS = 50
MAX_PLACEMENT_IOU = 0.3


def _iou_xyxy(a: list[int], b: list[int]) -> float:
    """IoU of two integer xyxy boxes, exactly as the reference placement test computes it."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = 0 if (x2 < x1 or y2 < y1) else (x2 - x1) * (y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, x: int, y: int, size: int, fill, outline=None, width=0):
    h = size // 2
    box = [x - h, y - h, x + h, y + h]
    if name == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif name == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    else:
        draw.polygon([(x, y - h), (x - h, y + h), (x + h, y + h)], fill=fill, outline=outline, width=width)


def _visibility(objects: list[tuple[int, str, int, int, int, list[int]]]) -> list[float]:
    """Fraction of each object's filled mask not covered by the objects drawn after it.

    Masks are drawn filled (no outline) on a blank ``L`` image and cropped to the object's box with
    ``Image.crop``, which excludes the box's last row and column, as in the reference.
    """
    masks = []
    for _, name, size, x, y, _ in objects:
        m = Image.new("L", (DET_SIZE, DET_SIZE), 0)
        _draw_shape(ImageDraw.Draw(m), name, x, y, size, fill=255)
        masks.append(np.asarray(m) > 0)
    vis = []
    for i, (*_, box) in enumerate(objects):
        later = np.zeros((DET_SIZE, DET_SIZE), dtype=bool)
        for m in masks[i + 1:]:
            later |= m
        own = np.asarray(Image.fromarray(masks[i]).crop(box))
        cover = np.asarray(Image.fromarray(later).crop(box))
        total = int(own.sum())
        vis.append(int((own & ~cover).sum()) / total if total > 0 else 0.0)
    return vis


def _sample_detection_objects(rng: random.Random) -> list[tuple[int, str, int, int, int, list[int]]]:
    """Draw one image's objects in the reference order: ``(cls_id, name, size, x, y, box_xyxy)``."""
    objects = []
    for _ in range(rng.randint(2, 5)):
        cls_id, name, (lo, hi), _ = rng.choice(SHAPES)
        size = rng.randint(lo, hi)
        h = size // 2
        for attempt in range(MAX_PLACEMENT_ATTEMPTS):
            x = rng.randint(h, DET_SIZE - h)
            y = rng.randint(h, DET_SIZE - h)
            box = [x - h, y - h, x + h, y + h]
            # The last attempt is kept whatever its overlap, as in the reference.
            if attempt == MAX_PLACEMENT_ATTEMPTS - 1 or all(_iou_xyxy(box, o[5]) <= MAX_PLACEMENT_IOU for o in objects):
                break
        objects.append((cls_id, name, size, x, y, box))
    return objects


def _detection_split(rng: random.Random, out: Path, split: str, first_id: int, first_ann_id: int, count: int) -> int:
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = first_ann_id
    for image_id in progress(range(first_id, first_id + count), desc=f"detection/{split}", unit="img"):
        objects = _sample_detection_objects(rng)
        img = Image.new("RGB", (DET_SIZE, DET_SIZE), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for cls_id, name, size, x, y, _ in objects:  # later shapes paint over earlier ones
            _draw_shape(draw, name, x, y, size, fill=SHAPES[cls_id][3], outline=(0, 0, 0), width=2)
        for (cls_id, _, size, _, _, box), vis in zip(objects, _visibility(objects), strict=True):
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": cls_id, "bbox": box,
                # size*size, not the box area: the reference data has it this way for odd sizes.
                "area": size * size, "visibility": vis,
            })
            ann_id += 1
        file_name = f"{image_id:06d}.png"
        img.save(out / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": DET_SIZE, "height": DET_SIZE})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": c, "name": n} for c, n, _, _ in SHAPES]}
    (out / f"{split}_annotations.json").write_text(json.dumps(doc, indent=2))
    return ann_id


def _keypoint_split(rng: random.Random, out: Path, split: str, first_id: int, count: int) -> None:
    (out / split).mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in progress(range(first_id, first_id + count), desc=f"keypoints/{split}", unit="img"):
        cx = rng.randint(40, 88)
        cy = rng.randint(40, 88)
        a_l = rng.uniform(-60, 60)
        a_r = rng.uniform(-60, 60)
        spread = rng.uniform(10, 30)
        head = (cx, cy - 20)
        # int() truncates toward zero, as in the reference.
        left_hand = (cx - int(20 * math.cos(math.radians(90 - a_l))),
                     cy - 6 + int(20 * math.sin(math.radians(90 - a_l))))
        right_hand = (cx + int(20 * math.cos(math.radians(90 - a_r))),
                      cy - 6 + int(20 * math.sin(math.radians(90 - a_r))))
        left_foot = (cx - int(spread), cy + 37)
        right_foot = (cx + int(spread), cy + 37)

        img = Image.new("L", (KP_SIZE, KP_SIZE), 255)
        draw = ImageDraw.Draw(img)
        draw.ellipse([head[0] - 8, head[1] - 8, head[0] + 8, head[1] + 8], outline=0, width=3)
        draw.line([(cx, cy - 12), (cx, cy + 12)], fill=0, width=3)
        draw.line([(cx, cy - 6), left_hand], fill=0, width=3)
        draw.line([(cx, cy - 6), right_hand], fill=0, width=3)
        draw.line([(cx, cy + 12), left_foot], fill=0, width=3)
        draw.line([(cx, cy + 12), right_foot], fill=0, width=3)

        file_name = f"{image_id:06d}.png"
        img.save(out / split / file_name)
        kps = [head, left_hand, right_hand, left_foot, right_foot]
        images.append({"id": image_id, "file_name": file_name, "keypoints": [list(p) for p in kps]})
    doc = {"images": images, "keypoint_names": KEYPOINT_NAMES, "num_keypoints": len(KEYPOINT_NAMES)}
    (out / f"{split}_annotations.json").write_text(json.dumps(doc, indent=2))


def generate(output_dir: str | Path = "./datasets", num_train: int = 1000, num_val: int = 200, seed: int = 641,
             only: str | None = None) -> Path:
    """Write ``detection/`` and/or ``keypoints/`` under ``output_dir``; returns the directory.

    ``only`` skips writing one dataset, but its random draws are still made, so the other dataset is
    the same as in a full run with the same seed and counts.
    """
    out = Path(output_dir)
    rng = random.Random(seed)
    np.random.seed(seed)  # seeded like the reference; nothing draws from it
    if only in (None, "detection"):
        ann_id = _detection_split(rng, out / "detection", "train", 0, 0, num_train)
        _detection_split(rng, out / "detection", "val", num_train, ann_id, num_val)
    else:
        for _ in range(num_train + num_val):  # same draws, nothing written
            _sample_detection_objects(rng)
    if only in (None, "keypoints"):
        _keypoint_split(rng, out / "keypoints", "train", 0, num_train)
        _keypoint_split(rng, out / "keypoints", "val", num_train, num_val)
    return out
