"""Keypoint data: reading and validating annotations, images decoded once, and the training targets.

Coordinate conventions (the one place they are defined; decoding in ``evaluate.py`` uses these helpers)
-----------------------------------------------------------------------------------------------------
* **Image pixels.** A keypoint ``(x, y)`` is in pixel-index coordinates: pixel ``i`` has its centre at
  ``x = i`` and covers ``[i - 0.5, i + 0.5)``. The generator's integer keypoints therefore sit on pixel
  centres (PIL draws a line to ``(x, y)`` through pixel ``x``). The image spans ``[-0.5, S - 0.5]``
  (``S = 128``); a keypoint outside that span is outside the image.
* **Heatmap pixels.** With stride ``s = S / hs``, heatmap pixel ``j`` covers image pixels
  ``j*s ... (j+1)*s - 1``, so its centre is at image ``x = (j + 0.5) * s - 0.5``, and a keypoint lands at
  ``u = (x + 0.5) / s - 0.5`` (sub-pixel, never rounded). This is the alignment of the encoder's 2x2
  max-pools, which merge pixels ``2j`` and ``2j+1`` into one.
* **Regression targets** are unit coordinates ``n = (x + 0.5) / S`` in ``[0, 1]``: the fraction of the image
  extent, the same continuous frame the heatmap uses (``u = n * hs - 0.5``). The model's ``[2K]`` vector
  is interleaved ``(x0, y0, x1, y1, ...)``. Decoding inverts it with ``x = n * S - 0.5``, so both methods
  are scored in the same pixel frame with no half-pixel bias between them.

Heatmap targets: one Gaussian per keypoint, ``exp(-((u-u0)^2 + (v-v0)^2) / (2 sigma^2))`` with sigma in
heatmap pixels and the peak (value 1) at the exact sub-pixel position; the map's border truncates it
without moving the peak, and a keypoint outside the image gives an all-zero map. The Gaussian is
separable, so a batch of maps is the outer product of two 1-D profiles: about 0.5 ms for 32 x 5 maps of
64 x 64, cheap enough to build targets on the fly (on the training device) instead of storing them.
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

IMAGE_SIZE = 128
OUTPUT_TYPES = ("heatmap", "regression")
HAND_NAMES = ("left_hand", "right_hand")


# --- coordinate frames -------------------------------------------------------------------------------------------

def pixels_to_unit(xy: torch.Tensor, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Image pixel coordinates -> unit coordinates in ``[0, 1]`` (``n = (x + 0.5) / S``)."""
    return (xy + 0.5) / image_size


def unit_to_pixels(n: torch.Tensor, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Unit coordinates -> image pixel coordinates (``x = n * S - 0.5``); inverse of :func:`pixels_to_unit`."""
    return n * image_size - 0.5


def pixels_to_heatmap(xy: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64) -> torch.Tensor:
    """Image pixel coordinates -> heatmap pixel coordinates (``u = (x + 0.5) * hs / S - 0.5``)."""
    return (xy + 0.5) * (heatmap_size / image_size) - 0.5


def heatmap_to_pixels(uv: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64) -> torch.Tensor:
    """Heatmap pixel coordinates -> image pixel coordinates; inverse of :func:`pixels_to_heatmap`."""
    return (uv + 0.5) * (image_size / heatmap_size) - 0.5


def inside_image(xy: torch.Tensor, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """``Bool[...]`` for ``xy (Tensor[..., 2])``: finite and within the image extent ``[-0.5, S - 0.5]``."""
    ok = torch.isfinite(xy) & (xy >= -0.5) & (xy <= image_size - 0.5)
    return ok.all(dim=-1)


# --- heatmap targets ---------------------------------------------------------------------------------------------

def render_heatmaps_batch(keypoints: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64,
                          sigma: float = 2.0) -> torch.Tensor:
    """Gaussian heatmaps for any leading shape.

    Args:
        keypoints (Tensor[..., K, 2]): ``(x, y)`` in image pixels (convention in the module docstring).
    Returns:
        Tensor[..., K, hs, hs] float32 on the keypoints' device; peak 1 at the exact sub-pixel position,
        all zeros for a keypoint outside the image (or NaN).
    """
    kp = keypoints.float()
    uv = pixels_to_heatmap(kp, image_size, heatmap_size)  # [..., K, 2]
    grid = torch.arange(heatmap_size, dtype=torch.float32, device=kp.device)
    g = torch.exp(-(grid - uv[..., None]) ** 2 / (2.0 * sigma * sigma))  # [..., K, 2, hs]: x- and y-profiles
    # Tails beyond ~9 sigma become 0 rather than float32 denormals, which slow every op that reads them.
    g = torch.where(inside_image(kp, image_size)[..., None, None] & (g >= 1e-18), g, 0.0)
    return g[..., 1, :, None] * g[..., 0, None, :]  # [..., K, hs(y), hs(x)]


def render_heatmaps(keypoints: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64,
                    sigma: float = 2.0) -> torch.Tensor:
    """Heatmaps of one image.

    Args:
        keypoints (Tensor[K, 2]): ``(x, y)`` in image pixels. A numpy array or nested list is accepted too.
        sigma: Gaussian standard deviation in heatmap pixels.
    Returns:
        Tensor[K, hs, hs]: see :func:`render_heatmaps_batch`.
    """
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    if kp.ndim != 2 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be [K, 2], got {list(kp.shape)}")
    return render_heatmaps_batch(kp, image_size, heatmap_size, sigma)


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


def _parse_annotations(annotation_file: Path, image_size: int) -> tuple[list[str], list[str], np.ndarray]:
    """Validate the annotation file; returns ``(keypoint_names, file_names, keypoints [N, K, 2])``."""
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
    """Grayscale 128x128 images with K keypoints, decoded once into memory as uint8.

    Item ``i`` is ``(image Tensor[1, 128, 128] in [0, 1], target)`` with target ``Tensor[K, hs, hs]``
    (``output_type='heatmap'``) or ``Tensor[2K]`` unit coordinates ``(x0, y0, x1, ...)``
    (``'regression'``; convention in the module docstring). Training uses :meth:`batches`, which builds
    a whole batch's targets at once on the dataset's device.

    ``canonical_hands=True`` relabels the two hands by x order (see :func:`canonicalize_hands`); this
    derived labelling exists only for the ambiguity hypothesis test.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, output_type: str = "heatmap",
                 heatmap_size: int = 64, sigma: float = 2.0, canonical_hands: bool = False,
                 image_size: int = IMAGE_SIZE):
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if heatmap_size < 1 or not sigma > 0:
            raise ValueError(f"need heatmap_size >= 1 and sigma > 0, got {heatmap_size}, {sigma}")
        self.output_type, self.heatmap_size, self.sigma, self.image_size = output_type, heatmap_size, sigma, image_size
        self.annotation_file = Path(annotation_file)
        self.keypoint_names, self.file_names, kps = _parse_annotations(self.annotation_file, image_size)
        self.hands = (tuple(self.keypoint_names.index(n) for n in HAND_NAMES)
                      if all(n in self.keypoint_names for n in HAND_NAMES) else None)
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

    def with_targets(self, output_type: str | None = None, heatmap_size: int | None = None,
                     sigma: float | None = None) -> KeypointDataset:
        """A view with other targets that shares the decoded images and keypoints (nothing is re-read)."""
        view = copy.copy(self)
        view.output_type = output_type or self.output_type
        view.heatmap_size = heatmap_size or self.heatmap_size
        view.sigma = sigma or self.sigma
        if view.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {view.output_type!r}")
        return view

    def to(self, device: torch.device | str) -> KeypointDataset:
        """Keep images (uint8) and keypoints on ``device``, so batches and targets are built there."""
        self.images, self.keypoints = self.images.to(device), self.keypoints.to(device)
        return self

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    def make_targets(self, keypoints: torch.Tensor) -> torch.Tensor:
        """``keypoints (Tensor[B, K, 2])`` pixels -> ``Tensor[B, K, hs, hs]`` heatmaps or ``Tensor[B, 2K]`` units."""
        if self.output_type == "heatmap":
            return render_heatmaps_batch(keypoints, self.image_size, self.heatmap_size, self.sigma)
        return pixels_to_unit(keypoints, self.image_size).flatten(1)  # [B, 2K] interleaved x, y

    def get_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images Tensor[B, 1, H, W] float in [0, 1], targets, keypoints Tensor[B, K, 2] pixels)``."""
        index = index.to(self.device)
        images = self.images[index].float().mul_(1.0 / 255.0)
        keypoints = self.keypoints[index]
        return images, self.make_targets(keypoints), keypoints

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets, _ = self.get_batch(torch.tensor([i]))
        return images[0], targets[0]

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


def load_split(data_dir: str | Path, split: str, **kwargs) -> KeypointDataset:
    """The ``split`` ('train'/'val') of ``data_dir``; keyword arguments go to :class:`KeypointDataset`."""
    image_dir, annotation_file = split_paths(data_dir, split)
    return KeypointDataset(image_dir, annotation_file, **kwargs)
