"""Codecs (MMPose-style): one class per output representation, owning both ``encode`` and ``decode``.

A method is a model plus a codec. ``encode(keypoints Tensor[B, K, 2] in image pixels)`` builds the training
targets (the dataset calls it), ``decode(outputs) -> Tensor[B, K, 2]`` image pixels feeds the shared PCK, figures
and failure analysis, so the methods are compared in one pixel frame by construction.

Coordinate conventions (the one place they are defined)
------------------------------------------------------
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

* **SimCC bins.** With ``L = S * split_ratio`` bins per axis, bin ``i`` covers ``1 / split_ratio`` image pixels
  centred at ``x = (i + 0.5) * S / L - 0.5``: the heatmap-pixel frame with ``hs = L``, so the same two
  conversions serve it.

Heatmap targets are Gaussians with sigma in heatmap pixels and the peak at the exact sub-pixel position; a
keypoint outside the image gives an all-zero map (the math is in ``heatmaps.py``). The integral codec decodes the
same kind of map by its expectation (soft-argmax) instead of its peak; the SimCC codec classifies each axis into
sub-pixel bins.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from problem2.config import DECODERS
from problem2.heatmaps import (
    DARK_BLUR_SIGMA,
    decode_heatmaps,
    decode_profiles,
    gaussian_heatmaps,
    gaussian_profiles,
    soft_argmax,
)

IMAGE_SIZE = 128
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


def simcc_bins(split_ratio: float, image_size: int = IMAGE_SIZE) -> int:
    """SimCC's bins per axis: ``image_size * split_ratio``, rounded (the model's output width, the codec's labels)."""
    return round(image_size * split_ratio)


def hand_indices(keypoint_names: Sequence[str]) -> tuple[int, int] | None:
    """Indices of the two hand keypoints, whose left/right labels the image cannot tell apart; None if absent."""
    names = list(keypoint_names)
    return tuple(names.index(n) for n in HAND_NAMES) if all(n in names for n in HAND_NAMES) else None


# --- heatmaps in image pixels ------------------------------------------------------------------------------------

def render_heatmaps_batch(keypoints: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64,
                          sigma: float = 2.0) -> torch.Tensor:
    """Gaussian heatmaps for any leading shape.

    Args:
        keypoints (Tensor[..., K, 2]): ``(x, y)`` in image pixels.
        sigma: Gaussian standard deviation in heatmap pixels.
    Returns:
        Tensor[..., K, hs, hs] float32 on the keypoints' device; peak 1 at the exact sub-pixel position,
        all zeros for a keypoint outside the image (or NaN).
    """
    kp = keypoints.float()
    return gaussian_heatmaps(pixels_to_heatmap(kp, image_size, heatmap_size), inside_image(kp, image_size),
                             heatmap_size, sigma)


def render_heatmaps(keypoints: torch.Tensor, image_size: int = IMAGE_SIZE, heatmap_size: int = 64,
                    sigma: float = 2.0) -> torch.Tensor:
    """Heatmaps of one image: ``keypoints (Tensor[K, 2])`` image pixels (an array or nested list works too)
    -> ``Tensor[K, hs, hs]``; see :func:`render_heatmaps_batch`."""
    kp = torch.as_tensor(keypoints, dtype=torch.float32)
    if kp.ndim != 2 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be [K, 2], got {list(kp.shape)}")
    return render_heatmaps_batch(kp, image_size, heatmap_size, sigma)


def extract_keypoints_from_heatmaps(heatmaps: torch.Tensor, image_size: int = IMAGE_SIZE, decoder: str = "dark",
                                    blur_sigma: float = DARK_BLUR_SIGMA,
                                    pairs: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """Keypoints from heatmaps, in image pixels.

    Args:
        heatmaps (Tensor[B, K, h, w]): one map per keypoint; the stride is ``image_size / w`` (and ``/ h``).
        decoder: ``'dark'``, ``'taylor'``, ``'quarter'`` or ``'argmax'`` (see
            :func:`~problem2.heatmaps.decode_heatmaps`); blur_sigma: the blur of ``'dark'``.
        pairs: index pairs of keypoints whose labels are ambiguous (the two hands here), decoded together by
            :func:`~problem2.heatmaps.decode_pair`; none by default.
    Returns:
        Tensor[B, K, 2]: ``(x, y)`` float32 in image pixels.
    """
    uv = decode_heatmaps(heatmaps, decoder, blur_sigma, pairs)  # [B, K, 2] heatmap pixels
    h, w = heatmaps.shape[-2:]
    return heatmap_to_pixels(uv, image_size, torch.tensor([w, h], dtype=torch.float32, device=uv.device))


# --- codecs ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
    """Gaussian heatmaps: ``encode -> Tensor[B, K, hs, hs]``, ``decode`` by ``decoder`` (dark/taylor/quarter/argmax).

    ``hand_pairs``: keypoint index pairs decoded jointly, one prediction per keypoint of the pair (their labels
    are ambiguous); ``()`` decodes every map alone.
    """
    image_size: int = IMAGE_SIZE
    heatmap_size: int = 64
    sigma: float = 2.0
    decoder: str = "dark"
    hand_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.heatmap_size < 1 or not self.sigma > 0:
            raise ValueError(f"need heatmap_size >= 1 and sigma > 0, got {self.heatmap_size}, {self.sigma}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        """``keypoints (Tensor[B, K, 2])`` image pixels -> ``Tensor[B, K, hs, hs]`` float32 targets."""
        return render_heatmaps_batch(keypoints, self.image_size, self.heatmap_size, self.sigma)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs (Tensor[B, K, h, w])`` -> ``Tensor[B, K, 2]`` float32 image pixels."""
        return extract_keypoints_from_heatmaps(outputs, self.image_size, self.decoder, pairs=self.hand_pairs)


@dataclasses.dataclass(frozen=True)
class RegressionCodec:
    """Unit coordinates: ``encode -> Tensor[B, 2K]`` interleaved ``(x0, y0, x1, ...)`` in ``[0, 1]``."""
    image_size: int = IMAGE_SIZE

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        """``keypoints (Tensor[B, K, 2])`` image pixels -> ``Tensor[B, 2K]`` unit coordinates."""
        return pixels_to_unit(keypoints, self.image_size).flatten(1)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs (Tensor[B, 2K])`` unit coordinates -> ``Tensor[B, K, 2]`` float32 image pixels."""
        return unit_to_pixels(outputs.detach().float().view(outputs.shape[0], -1, 2), self.image_size)


@dataclasses.dataclass(frozen=True)
class IntegralCodec:
    """Integral regression (soft-argmax) on ``hs x hs`` maps: the expectation of each map's softmax is the keypoint.

    ``encode -> {'uv': Tensor[B, K, 2] heatmap pixels, 'heatmaps': Tensor[B, K, hs, hs]}``: the coordinates the
    loss compares the expectation with, and the Gaussian target of ``sigma`` heatmap pixels normalised to sum 1,
    toward which DSNT's divergence term pulls the softmax. ``decode`` takes the expectation: no peak search, and
    between the peaks of a two-peaked map.
    """
    image_size: int = IMAGE_SIZE
    heatmap_size: int = 64
    sigma: float = 2.0

    def encode(self, keypoints: torch.Tensor) -> dict[str, torch.Tensor]:
        """``keypoints (Tensor[B, K, 2])`` image pixels -> ``{'uv', 'heatmaps'}`` float32 targets (see the class)."""
        kp = keypoints.float()
        maps = render_heatmaps_batch(kp, self.image_size, self.heatmap_size, self.sigma)  # [B, K, hs, hs]
        total = maps.sum(dim=(-2, -1), keepdim=True)
        return {"uv": pixels_to_heatmap(kp, self.image_size, self.heatmap_size),
                "heatmaps": maps / total.clamp_min(1e-12)}  # all zero for a keypoint outside the image

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs (Tensor[B, K, h, w])`` map logits -> ``Tensor[B, K, 2]`` float32 image pixels (soft-argmax)."""
        h, w = outputs.shape[-2:]
        uv, _ = soft_argmax(outputs.detach())
        return heatmap_to_pixels(uv, self.image_size, torch.tensor([w, h], dtype=torch.float32, device=uv.device))


@dataclasses.dataclass(frozen=True)
class SimCCCodec:
    """SimCC (Li et al. 2022): each coordinate classified into ``L = image_size * split_ratio`` sub-pixel bins.

    ``encode -> Tensor[B, K, 2, L]``: per keypoint and axis (x at ``[:, :, 0]``, y at ``[:, :, 1]``) a Gaussian of
    ``sigma`` image pixels over the bins, normalised to sum 1 (the label-smoothed class distribution the KL loss
    compares with the softmax of the logits). ``decode`` takes each axis's argmax with a sub-bin step
    (:func:`~problem2.heatmaps.decode_profiles`): x and y are decoded apart, each at its own maximum.
    """
    image_size: int = IMAGE_SIZE
    split_ratio: float = 2.0
    sigma: float = 2.0

    def __post_init__(self):
        if self.bins < 3 or not self.sigma > 0:
            raise ValueError(f"need image_size * split_ratio >= 3 bins and sigma > 0, got {self.bins}, {self.sigma}")

    @property
    def bins(self) -> int:
        return simcc_bins(self.split_ratio, self.image_size)

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        """``keypoints (Tensor[B, K, 2])`` image pixels -> ``Tensor[B, K, 2, L]`` float32 label distributions."""
        kp = keypoints.float()
        scale = self.bins / self.image_size  # bins per image pixel
        labels = gaussian_profiles(pixels_to_heatmap(kp, self.image_size, self.bins), inside_image(kp, self.image_size),
                                   self.bins, self.sigma * scale)  # [B, K, 2, L]
        return labels / labels.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs (Tensor[B, K, 2, L])`` logits -> ``Tensor[B, K, 2]`` float32 image pixels."""
        return heatmap_to_pixels(decode_profiles(outputs), self.image_size, outputs.shape[-1])


Codec = HeatmapCodec | RegressionCodec | IntegralCodec | SimCCCodec
