"""Keypoint data: reading and validating annotations, images decoded once, and the training targets.

Keypoints are ``(x, y)`` in image pixels (the convention is in ``codec.py``). A dataset holds a codec
(:mod:`problem2.codec`) whose ``encode`` builds each batch's targets on the dataset's device; a view with another
codec (:meth:`KeypointDataset.with_codec`) shares the decoded images.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data import load_images, load_json, require_dir
from common.distributed import DistInfo, shard_indices
from common.errors import UserError
from problem2.codec import HAND_NAMES, IMAGE_SIZE, Codec, HeatmapCodec, hand_indices
from problem2.codec import render_heatmaps as render_heatmaps  # re-exported: importable here, as before


def canonicalize_hands(keypoints: torch.Tensor, hands: tuple[int, int]) -> torch.Tensor:
    """Derived labelling: give the first hand label to the hand with the smaller x (ties: smaller y).

    The generator draws both arms alike with independent angles, so an image cannot tell which hand
    carries ``left_hand``; ordering by position makes the label a function of the image.

    Args:
        keypoints (Tensor[..., K, 2]); hands: indices of the two hand keypoints.
    Returns:
        Tensor[..., K, 2], a relabelled copy.
    """
    a, b = keypoints[..., hands[0], :], keypoints[..., hands[1], :]
    swap = (a[..., 0] > b[..., 0]) | ((a[..., 0] == b[..., 0]) & (a[..., 1] > b[..., 1]))  # [...]
    out = keypoints.clone()
    out[..., hands[0], :] = torch.where(swap[..., None], b, a)
    out[..., hands[1], :] = torch.where(swap[..., None], a, b)
    return out


# --- data --------------------------------------------------------------------------------------------------------

def split_paths(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of a split; ``data_dir`` is the datasets root or its ``keypoints/``."""
    root = Path(data_dir)
    if not (root / f"{split}_annotations.json").exists() and (root / "keypoints").is_dir():
        root = root / "keypoints"
    return root / split, root / f"{split}_annotations.json"


def _parse_annotations(annotation_file: Path, image_size: int, limit: int = 0
                       ) -> tuple[list[str], list[str], np.ndarray]:
    """Validate the annotation file; returns ``(keypoint_names, file_names, keypoints [N, K, 2])`` of its first
    ``limit`` images (0: all)."""
    ann = load_json(annotation_file, required_keys=("images", "keypoint_names"))
    names = ann["keypoint_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{annotation_file}: 'keypoint_names' must be a non-empty list of strings")
    k = len(names)
    if "num_keypoints" in ann and ann["num_keypoints"] != k:
        raise UserError(f"{annotation_file}: num_keypoints is {ann['num_keypoints']} but keypoint_names has {k}")
    images = ann["images"]
    if not isinstance(images, list):
        raise UserError(f"{annotation_file}: 'images' must be a list")
    if not images:
        raise UserError(f"{annotation_file}: empty split (no images)")
    if limit:
        images = images[:limit]
    file_names, kps = [], np.empty((len(images), k, 2), dtype=np.float32)
    for i, im in enumerate(images):
        where = f"{annotation_file}: image {im.get('id', i) if isinstance(im, dict) else i}"
        if not isinstance(im, dict) or "file_name" not in im or "keypoints" not in im:
            raise UserError(f"{where}: entry needs 'file_name' and 'keypoints'")
        try:
            arr = np.asarray(im["keypoints"], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f"{where}: keypoints must be numbers [[x, y] x {k}]") from None
        if arr.shape != (k, 2):
            raise UserError(f"{where}: expected {k} keypoints as [[x, y] x {k}], got shape {list(arr.shape)}")
        bad = ~(np.isfinite(arr) & (arr >= -0.5) & (arr <= image_size - 0.5)).all(axis=1)
        if bad.any():
            j = int(np.argmax(bad))
            raise UserError(f"{where}: keypoint '{names[j]}' at {arr[j].tolist()} is outside the "
                            f"{image_size}x{image_size} image")
        file_names.append(str(im["file_name"]))
        kps[i] = arr
    return names, file_names, kps


class KeypointDataset(Dataset):
    """Grayscale 128x128 images with K keypoints, decoded once into memory as uint8, and a codec for the targets.

    Item ``i`` is ``(image Tensor[1, 128, 128] in [0, 1], codec.encode(keypoints)[0])``: ``Tensor[K, hs, hs]``
    for the default :class:`~problem2.codec.HeatmapCodec`. Training uses :meth:`batches`, which encodes a whole
    batch's targets at once on the dataset's device.

    ``canonical_hands=True`` relabels the two hands by x order (see :func:`canonicalize_hands`); this
    derived labelling exists only for the ambiguity hypothesis test. ``limit``: only the first N images (0: all).
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, codec: Codec | None = None,
                 canonical_hands: bool = False, image_size: int = IMAGE_SIZE, limit: int = 0):
        self.codec = codec if codec is not None else HeatmapCodec(image_size)
        self.image_size = image_size
        self.annotation_file = Path(annotation_file)
        self.keypoint_names, self.file_names, kps = _parse_annotations(self.annotation_file, image_size, limit)
        self.hands = hand_indices(self.keypoint_names)
        images = load_images(require_dir(image_dir), self.file_names, image_size, "L", self.annotation_file)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # [N, 1, H, W] uint8
        self.keypoints = torch.from_numpy(kps)  # [N, K, 2] image pixels, labelled as in the file
        self.canonical_hands = canonical_hands
        if canonical_hands:
            if self.hands is None:
                raise UserError(f"{self.annotation_file}: --canonical-hands needs keypoints named {HAND_NAMES}")
            self.keypoints = canonicalize_hands(self.keypoints, self.hands)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def with_codec(self, codec: Codec) -> KeypointDataset:
        """A view whose targets come from ``codec``; it shares the decoded images and keypoints (nothing is re-read)."""
        view = copy.copy(self)
        view.codec = codec
        return view

    def to(self, device: torch.device | str) -> KeypointDataset:
        """Keep images (uint8) and keypoints on ``device``, so batches and targets are built there."""
        self.images, self.keypoints = self.images.to(device), self.keypoints.to(device)
        return self

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def get_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images Tensor[B, 1, H, W] float in [0, 1], codec.encode(keypoints), keypoints Tensor[B, K, 2] px)``."""
        index = index.to(self.device)
        images = self.images[index].float().mul_(1.0 / 255.0)
        keypoints = self.keypoints[index]
        return images, self.codec.encode(keypoints), keypoints

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | dict[str, torch.Tensor]]:
        images, targets, _ = self.get_batch(torch.tensor([i]))
        # The integral codec's targets are a dict of named tensors.
        return images[0], ({k: v[0] for k, v in targets.items()} if isinstance(targets, dict) else targets[0])

    def batches(self, batch_size: int, generator: torch.Generator | None = None, dist_info: DistInfo | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Batches of :meth:`get_batch`, shuffled by ``generator`` (CPU; None keeps file order). With ``dist_info``
        (torchrun) only this rank's share of the order (DistributedSampler semantics), ``batch_size`` per rank."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        if dist_info is not None:
            order = shard_indices(order, dist_info)
        for start in range(0, len(order), batch_size):
            yield self.get_batch(order[start:start + batch_size])

    def num_batches(self, batch_size: int, dist_info: DistInfo | None = None) -> int:
        n = len(self) if dist_info is None else math.ceil(len(self) / dist_info.world_size)
        return math.ceil(n / batch_size)


def load_split(data_dir: str | Path, split: str, limit: int = 0, **kwargs) -> KeypointDataset:
    """The ``split`` ('train'/'val') of ``data_dir``, its first ``limit`` images (0: all); keyword arguments go to
    :class:`KeypointDataset`."""
    image_dir, annotation_file = split_paths(data_dir, split)
    return KeypointDataset(image_dir, annotation_file, limit=limit, **kwargs)
