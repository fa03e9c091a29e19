"""Statistics of the study's data, read from the annotation files: what the report's data section shows."""
from __future__ import annotations

import statistics
from pathlib import Path

from common.data import load_json
from problem1.config import CLASS_NAMES
from problem1.metrics import HIDDEN_VISIBILITY

SPLITS = ("train", "val")


def _box_side(box: list[float]) -> float:
    """The larger side of an ``[x1, y1, x2, y2]`` box: a shape's size in pixels."""
    return max(box[2] - box[0], box[3] - box[1])


def detection_stats(data_dir: Path) -> dict | None:
    """Per split: images, objects per image, and per class the object count, size range (px) and hidden objects
    (visibility below :data:`~problem1.metrics.HIDDEN_VISIBILITY`)."""
    out = {}
    for split in SPLITS:
        path = data_dir / "detection" / f"{split}_annotations.json"
        if not path.is_file():
            return None
        doc = load_json(path, ("images", "annotations"))
        per_image = {im["id"]: 0 for im in doc["images"]}
        by_class = {c: [] for c in CLASS_NAMES}
        hidden = dict.fromkeys(CLASS_NAMES, 0)
        for a in doc["annotations"]:
            name = CLASS_NAMES[a["category_id"]]
            by_class[name].append(_box_side(a["bbox"]))
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
            hidden[name] += int(a.get("visibility", 1.0) < HIDDEN_VISIBILITY)
        counts = list(per_image.values())
        out[split] = {"images": len(doc["images"]), "objects": sum(counts),
                      "objects_per_image_mean": statistics.fmean(counts) if counts else None,
                      "objects_per_image_max": max(counts, default=0),
                      "classes": {c: {"objects": len(s), "size_min": min(s, default=None),
                                      "size_max": max(s, default=None), "hidden": hidden[c]}
                                  for c, s in by_class.items()}}
    return {"hidden_visibility_below": HIDDEN_VISIBILITY, "splits": out}


def keypoint_stats(data_dir: Path) -> dict | None:
    """Per split: images and the mean diagonal of the keypoint box (the PCK reference length, px)."""
    out, names = {}, None
    for split in SPLITS:
        path = data_dir / "keypoints" / f"{split}_annotations.json"
        if not path.is_file():
            return None
        doc = load_json(path, ("images",))
        names = doc.get("keypoint_names", names)
        diagonals = []
        for im in doc["images"]:
            xs, ys = [p[0] for p in im["keypoints"]], [p[1] for p in im["keypoints"]]
            diagonals.append(((max(xs) - min(xs)) ** 2 + (max(ys) - min(ys)) ** 2) ** 0.5)
        out[split] = {"images": len(doc["images"]),
                      "keypoint_box_diagonal_mean": statistics.fmean(diagonals) if diagonals else None}
    return {"keypoint_names": names, "splits": out}


def data_summary(data_dir: str | Path) -> dict:
    data_dir = Path(data_dir)
    return {"data_dir": str(data_dir), "detection": detection_stats(data_dir), "keypoints": keypoint_stats(data_dir)}
