"""Reading the shape-detection data: validated annotations, every PNG decoded once into one uint8 tensor.

Layout under ``--data-dir``::

    detection/train/000000.png ...        detection/train_annotations.json
    detection/val/001000.png ...          detection/val_annotations.json

Annotation boxes are ``[x1, y1, x2, y2]`` corners in pixels (not COCO's ``[x, y, w, h]``).

Bad data is a :class:`~common.errors.UserError` naming the file and the fault. Boxes are **rejected, not
clipped**: a box with ``x2 <= x1`` / ``y2 <= y1`` or reaching outside the 224x224 image means that the
annotation and the image disagree (another box format, another image size), and clipping would hide that. A
rejected box that would be valid read as ``[x, y, w, h]`` gets a hint saying so.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from common.data import load_images, load_json, require_dir
from common.distributed import DistInfo, shard_indices
from common.errors import UserError
from problem1.config import CLASS_NAMES, IMAGE_SIZE, detection_dir


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_box(box: object, where: str, size: int) -> list[float]:
    """Validate one ``[x1, y1, x2, y2]`` box; the error message says what is wrong and hints at xywh."""
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        raise UserError(f"{where}: bbox must be a list of 4 finite numbers [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        fault = "has x2 <= x1 or y2 <= y1"
    elif x1 < 0 or y1 < 0 or x2 > size or y2 > size:
        fault = f"reaches outside the {size}x{size} image (boxes are rejected, not clipped)"
    else:
        return [float(v) for v in box]
    as_xywh_ok = x2 > 0 and y2 > 0 and x1 >= 0 and y1 >= 0 and x1 + x2 <= size and y1 + y2 <= size
    hint = ("; it looks like [x, y, w, h]: this dataset expects [x1, y1, x2, y2] corners" if as_xywh_ok else "")
    raise UserError(f"{where}: bbox {box} {fault}{hint}")


def parse_annotations(annotation_file: Path, num_classes: int = len(CLASS_NAMES), image_size: int = IMAGE_SIZE
                      ) -> tuple[list[dict], list[dict]]:
    """Read and validate an annotation file.

    Returns:
        images: the JSON image entries, in file order.
        targets: per image ``{'boxes': Tensor[N, 4] xyxy, 'labels': Tensor[N] long, 'visibility': Tensor[N],
        'image_id': int}``.
    """
    doc = load_json(annotation_file, required_keys=("images", "annotations"))
    images, anns = doc["images"], doc["annotations"]
    if not isinstance(images, list) or not isinstance(anns, list):
        raise UserError(f"{annotation_file}: 'images' and 'annotations' must be lists")
    if not images:
        raise UserError(f"{annotation_file}: empty split (no images)")
    index: dict[object, int] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise UserError(f"{annotation_file}: images[{i}] needs an 'id' and a 'file_name'")
        if im["id"] in index:
            raise UserError(f"{annotation_file}: image id {im['id']} appears twice")
        index[im["id"]] = i
    per_image: list[list[tuple[list[float], int, float]]] = [[] for _ in images]
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise UserError(f"{annotation_file}: annotations[{k}] is not an object")
        missing = [key for key in ("image_id", "category_id", "bbox") if key not in ann]
        where = f"{annotation_file}: annotation {ann.get('id', f'#{k}')}"
        if missing:
            raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
        if ann["image_id"] not in index:
            raise UserError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        cat = ann["category_id"]
        if not (isinstance(cat, int) and not isinstance(cat, bool) and 0 <= cat < num_classes):
            names = ", ".join(f"{i}={n}" for i, n in enumerate(CLASS_NAMES[:num_classes]))
            raise UserError(f"{where}: unknown category id {cat!r} (expected one of {names})")
        vis = ann.get("visibility", 1.0)
        if not _number(vis):
            raise UserError(f"{where}: visibility must be a number, got {vis!r}")
        box = _check_box(ann["bbox"], where, image_size)
        per_image[index[ann["image_id"]]].append((box, cat, float(vis)))
    targets = []
    for im, objs in zip(images, per_image, strict=True):
        targets.append({
            "boxes": torch.tensor([o[0] for o in objs], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o[1] for o in objs], dtype=torch.long),
            "visibility": torch.tensor([o[2] for o in objs], dtype=torch.float32),
            "image_id": im["id"],
        })
    return images, targets


class ShapeDetectionDataset(Dataset):
    """Images ``[3, 224, 224]`` float in [0, 1] with targets ``{boxes [N, 4] xyxy, labels [N], visibility [N]}``.

    Every PNG is decoded once, here, into ``self.images`` (``Tensor[N, 3, 224, 224]`` uint8, about 150 MB for
    1000 images); nothing is decoded per step. ``transform`` is applied to the float image only, so it must not
    move pixels (the boxes would no longer fit). :meth:`get_batch` is the fast path used by training: it indexes
    the uint8 tensor and the padded targets directly, with no per-item Python work.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Callable[[Tensor], Tensor] | None = None, limit: int = 0):
        annotation_file = Path(annotation_file)
        images, targets = parse_annotations(annotation_file)
        if limit:
            images, targets = images[:limit], targets[:limit]
        image_dir = require_dir(image_dir)
        pixels = load_images(image_dir, [im["file_name"] for im in images], IMAGE_SIZE, "RGB", annotation_file)
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W] uint8
        self.targets = targets
        self.file_names = [im["file_name"] for im in images]
        self.image_dir, self.annotation_file, self.transform = image_dir, annotation_file, transform
        # Padded copies of the targets for batched matching: [N, Gmax, 4], labels -1 in padding.
        self.counts = torch.tensor([len(t["labels"]) for t in targets], dtype=torch.long)
        g = int(self.counts.max()) if len(targets) else 0
        self.padded_boxes = torch.zeros(len(targets), g, 4)
        self.padded_labels = torch.full((len(targets), g), -1, dtype=torch.long)
        for i, t in enumerate(targets):
            self.padded_boxes[i, : len(t["labels"])] = t["boxes"]
            self.padded_labels[i, : len(t["labels"])] = t["labels"]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, dict]:
        image = self.images[i].float().div_(255)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]

    def to(self, device: torch.device) -> ShapeDetectionDataset:
        """Move the decoded images and padded targets to ``device`` (on a GPU the whole set stays resident)."""
        self.images = self.images.to(device)
        self.padded_boxes, self.padded_labels = self.padded_boxes.to(device), self.padded_labels.to(device)
        return self

    def get_batch(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The batch ``indices`` (``Tensor[B]`` long, on the CPU) as tensors on the dataset's device.

        Returns:
            images (Tensor[B, 3, 224, 224]) float in [0, 1]; boxes (Tensor[B, G, 4]) xyxy; labels (Tensor[B, G])
            long with ``-1`` in padding, ``G`` the largest object count in this batch.
        """
        g = int(self.counts[indices].max()) if len(indices) else 0
        dev_idx = indices.to(self.images.device, non_blocking=True)
        images = self.images.index_select(0, dev_idx).float().div_(255)
        if self.transform is not None:
            images = torch.stack([self.transform(im) for im in images])
        return images, self.padded_boxes[dev_idx, :g], self.padded_labels[dev_idx, :g]


def detection_collate(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """Collate for :class:`torch.utils.data.DataLoader`: images stacked to ``[B, 3, H, W]``, targets kept as a list."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def iterate_batches(num_items: int, batch_size: int, generator: torch.Generator | None = None,
                    dist_info: DistInfo | None = None) -> Iterator[Tensor]:
    """Index batches over ``range(num_items)``: shuffled with ``generator`` if given, the last batch may be short.

    With ``dist_info`` (torchrun) only this rank's share of the order (DistributedSampler semantics), in batches of
    ``batch_size`` (the per-rank batch).
    """
    order = torch.randperm(num_items, generator=generator) if generator is not None else torch.arange(num_items)
    if dist_info is not None:
        order = shard_indices(order, dist_info)
    yield from order.split(batch_size)


def load_split(data_dir: str | Path, split: str, limit: int = 0) -> ShapeDetectionDataset:
    """``data_dir/detection/{split}`` and its annotation file as a dataset (errors name the missing file)."""
    root = detection_dir(data_dir)
    return ShapeDetectionDataset(root / split, root / f"{split}_annotations.json", limit=limit)


def object_sizes(boxes: Tensor) -> Tensor:
    """``boxes (Tensor[N, 4])`` xyxy -> ``Tensor[N]`` object size in pixels, ``sqrt(w * h)``."""
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()


def as_numpy_targets(dataset: ShapeDetectionDataset) -> list[dict[str, np.ndarray]]:
    """Ground truths as float64/int numpy per image (for metrics): ``boxes``, ``labels``, ``visibility``."""
    return [{"boxes": t["boxes"].double().numpy(), "labels": t["labels"].numpy(),
             "visibility": t["visibility"].double().numpy()} for t in dataset.targets]
