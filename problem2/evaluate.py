#!/usr/bin/env python3
"""Decoding, PCK, the hand-ambiguity ceiling, the evaluation path shared with training, figures and reports.

The two methods differ only in :func:`decode` (heatmaps -> :func:`extract_keypoints_from_heatmaps`,
regression -> unit coordinates back to pixels); everything after it (PCK, errors, plots) is shared,
so the comparison is fair by construction. ``train.py`` calls :func:`evaluate` every epoch, and this
script calls the same function on the saved models.

Usage::

    python problem2/evaluate.py --data-dir datasets --results-dir results/problem2

writes ``metrics.json``, ``summary.md`` and ``figures/*.png`` into the results directory.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a file: replace the script's folder with the repo root on sys.path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common.config import cfg_field, parse_config  # noqa: E402
from common.data import load_json  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.io import atomic_savefig, atomic_write_json, atomic_write_text  # noqa: E402
from common.plotting import pyplot  # noqa: E402
from common.runtime import autocast, memory_format, pick_device  # noqa: E402
from common.training import load_checkpoint, load_weights  # noqa: E402
from problem2.config import DECODERS, PROBLEM  # noqa: E402
from problem2.dataset import (  # noqa: E402
    IMAGE_SIZE,
    KeypointDataset,
    heatmap_to_pixels,
    load_split,
    pixels_to_heatmap,
    unit_to_pixels,
)
from problem2.loss import KeypointMSELoss  # noqa: E402
from problem2.model import build_model  # noqa: E402

METHODS = ("heatmap", "regression")
THRESHOLDS = (0.05, 0.1, 0.15, 0.2)  # the tables
DENSE_THRESHOLDS = tuple(round(0.005 * i, 3) for i in range(101))  # the curve, 0 .. 0.5
FAILURE_THRESHOLD = 0.1
TORSO = ("head", "left_foot", "right_foot")  # torso length: head to the midpoint of the feet


# --- decoding ----------------------------------------------------------------------------------------------------

def _patch(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, radius: int) -> torch.Tensor:
    """Values within ``radius`` of ``(py, px)``, border replicated (coordinates clamped into the map).

    ``maps [B,K,h,w]``, ``px, py [B,K]`` -> ``[B, K, 2*radius+1, 2*radius+1]``, indexed ``[..., radius+dy, radius+dx]``.
    """
    b, k, h, w = maps.shape
    d = torch.arange(-radius, radius + 1, device=maps.device)
    ys, xs = (py[..., None] + d).clamp(0, h - 1), (px[..., None] + d).clamp(0, w - 1)  # [B, K, P]
    idx = ys[..., :, None] * w + xs[..., None, :]  # [B, K, P, P]
    return maps.flatten(2).gather(2, idx.flatten(2)).view(b, k, 2 * radius + 1, 2 * radius + 1)


def _neighbourhood(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """3x3 values around ``(py, px)``, border replicated: ``maps [B,K,h,w]``, ``px, py [B,K]`` -> ``[B,K,3,3]``."""
    return _patch(maps, px, py, 1)


def _blur_radius(sigma: float) -> int:
    return max(1, math.ceil(3 * sigma))


def _blurred_neighbourhood(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, sigma: float) -> torch.Tensor:
    """The 3x3 values around ``(py, px)`` of the maps blurred by a Gaussian of ``sigma`` (DARK's modulation).

    Equal to blurring the whole map (separable kernel of radius ``_blur_radius(sigma)``, border replicated) and
    then taking :func:`_neighbourhood`, but only the ``(3 + 2r)^2`` pixels that those 9 values depend on are
    touched: ~10x less work than a full-map blur for 64x64 maps. The replicated border is only a guess of what
    lies beyond it, so values within the radius of the border are biased and the decoder does not use them there.
    ``-> [B, K, 3, 3]``.
    """
    r = _blur_radius(sigma)
    t = torch.arange(-r, r + 1, dtype=maps.dtype, device=maps.device)
    kern = torch.exp(-t ** 2 / (2 * sigma * sigma))
    kern = kern / kern.sum()
    p = _patch(maps, px, py, r + 1)  # [B, K, 2r+3, 2r+3]
    p = p.unfold(3, 2 * r + 1, 1) @ kern  # along x: [B, K, 2r+3, 3]
    return p.unfold(2, 2 * r + 1, 1) @ kern  # along y: [B, K, 3, 3]


def _quadratic_peak(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
    """Maximum of the quadratic fitted to ``log(maps)`` on the 3x3 stencil around ``(px, py)`` ``[B, K]``
    (of the maps blurred by ``blur_sigma`` if > 0, see :func:`_blurred_neighbourhood`).

    One Newton step ``-H^-1 g`` with central differences. The stencil is moved inside the map at a
    border: the fitted quadratic is the same wherever its stencil sits, so a Gaussian that the border
    truncates is still located exactly. Where the 2-D Hessian is not negative definite it steps per
    axis, or keeps the argmax on an axis with no maximum. Returns ``Tensor[B, K, 2]`` heatmap pixels.
    """
    _, _, h, w = maps.shape
    cx, cy = px.clamp(1, w - 2), py.clamp(1, h - 2)
    n = _blurred_neighbourhood(maps, cx, cy, blur_sigma) if blur_sigma > 0 else _neighbourhood(maps, cx, cy)
    f = n.clamp_min(1e-10).log()  # [B, K, 3, 3], f[..., 1+dy, 1+dx]
    gx, gy = 0.5 * (f[..., 1, 2] - f[..., 1, 0]), 0.5 * (f[..., 2, 1] - f[..., 0, 1])
    hxx = f[..., 1, 2] - 2 * f[..., 1, 1] + f[..., 1, 0]
    hyy = f[..., 2, 1] - 2 * f[..., 1, 1] + f[..., 0, 1]
    hxy = 0.25 * (f[..., 2, 2] - f[..., 2, 0] - f[..., 0, 2] + f[..., 0, 0])
    det = hxx * hyy - hxy * hxy
    full = (hxx < 0) & (det > 1e-12)  # negative definite: the quadratic has a maximum
    safe_det = torch.where(full, det, 1.0)
    ox = torch.where(full, -(hyy * gx - hxy * gy) / safe_det, -gx / hxx.clamp_max(-1e-12))
    oy = torch.where(full, -(hxx * gy - hxy * gx) / safe_det, -gy / hyy.clamp_max(-1e-12))
    peak_x = torch.where(full | (hxx < 0), cx + ox, px.float())
    peak_y = torch.where(full | (hyy < 0), cy + oy, py.float())
    return torch.stack([peak_x, peak_y], dim=-1).nan_to_num(0.0)


DARK_BLUR_SIGMA = 1.0  # heatmap pixels; measured best of {0, 0.5, 1, 2} on a partly trained 64x64 model
PAIR_PEAK_RATIO = 0.5  # a second peak at least this high (relative to the first) is the other hand


def _refine(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, method: str, blur_sigma: float) -> torch.Tensor:
    """Sub-pixel position of the peaks at integer ``(px, py) [B, K]`` of ``maps [B, K, h, w]`` -> ``[B, K, 2]``."""
    _, _, h, w = maps.shape
    argmax = torch.stack([px, py], dim=-1).float()  # [B, K, 2] heatmap pixels
    if method == "quarter":
        n = _neighbourhood(maps, px, py)
        inner_x, inner_y = (px > 0) & (px < w - 1), (py > 0) & (py < h - 1)  # both neighbours exist
        step = torch.stack([torch.where(inner_x, torch.sign(n[..., 1, 2] - n[..., 1, 0]), 0.0),
                            torch.where(inner_y, torch.sign(n[..., 2, 1] - n[..., 0, 1]), 0.0)], dim=-1)
        return argmax + 0.25 * step
    if method in ("dark", "taylor") and min(h, w) >= 3:
        peak = _quadratic_peak(maps, px, py)
        if method == "dark" and blur_sigma > 0:
            r = _blur_radius(blur_sigma)
            inside = (px > r) & (px < w - 1 - r) & (py > r) & (py < h - 1 - r)  # stencil clear of padding
            peak = torch.where(inside[..., None], _quadratic_peak(maps, px, py, blur_sigma), peak)
        return argmax + (peak - argmax).clamp(-1.0, 1.0)
    return argmax


def _decode_pair(ma: torch.Tensor, mb: torch.Tensor, method: str, blur_sigma: float) -> torch.Tensor:
    """Two keypoints whose labels the image cannot tell apart, decoded together: ``[B, h, w] x 2 -> [B, 2, 2]``.

    Trained with MSE on such labels, both maps approach the posterior mean, half a Gaussian on each
    of the two places, so decoding each map alone puts both labels on the same place. Here the summed
    map's two highest local maxima are the two places; if the second is at least ``PAIR_PEAK_RATIO`` of
    the first, each label gets one place (the assignment the two maps prefer, i.e. "commit to one
    assignment"), else the places have merged into one peak and both labels get it (the midpoint).
    """
    s = (ma + mb)[:, None]  # [B, 1, h, w]
    b, _, h, w = s.shape
    flat = s.flatten(1)  # [B, h*w]
    v1, i1 = flat.max(dim=1)
    local_max = (F.max_pool2d(s, 3, stride=1, padding=1) == s).flatten(1)
    yy, xx = torch.arange(h, device=s.device).repeat_interleave(w), torch.arange(w, device=s.device).repeat(h)
    near1 = ((yy[None] - (i1 // w)[:, None]).abs() <= 1) & ((xx[None] - (i1 % w)[:, None]).abs() <= 1)
    v2, i2 = torch.where(local_max & ~near1, flat, -torch.inf).max(dim=1)
    two = v2 >= PAIR_PEAK_RATIO * v1  # [B]
    idx = torch.stack([i1, torch.where(two, i2, i1)], dim=1)  # [B, 2]
    peaks = _refine(s.expand(b, 2, h, w), idx % w, idx // w, method, blur_sigma)  # [B, 2, 2]
    at = lambda m, i: m.flatten(1).gather(1, i[:, None])[:, 0]  # noqa: E731
    keep = at(ma, idx[:, 0]) + at(mb, idx[:, 1]) >= at(ma, idx[:, 1]) + at(mb, idx[:, 0])
    return torch.where(keep[:, None, None], peaks, peaks.flip(1))


def extract_keypoints_from_heatmaps(heatmaps: torch.Tensor, image_size: int = IMAGE_SIZE, method: str = "dark",
                                    blur_sigma: float = DARK_BLUR_SIGMA,
                                    pairs: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """Keypoints from heatmaps, in input-image pixels (the convention of ``problem2/dataset.py``).

    Args:
        heatmaps (Tensor[B, K, h, w]): one map per keypoint.
        image_size: side of the input image in pixels.
        method:
            ``'dark'`` (default): DARK (Zhang et al. 2020): blur the map with a Gaussian of ``blur_sigma``
            heatmap pixels (it smooths a predicted map towards a Gaussian and leaves a Gaussian's centre
            in place), then take the maximum of the quadratic fitted to the log-heatmap around the
            argmax (:func:`_quadratic_peak`). Near the border, where blurring would need pixels beyond
            it, the unblurred map is used.
            ``'taylor'``: the same quadratic step without the blur. A Gaussian's log is quadratic, so
            both invert :func:`~problem2.dataset.render_heatmaps` up to float rounding.
            ``'quarter'``: argmax plus a quarter pixel towards the larger neighbour (Newell et al. 2016).
            ``'argmax'``: the integer argmax.
            The refined position stays within 1 heatmap pixel of the argmax.
        blur_sigma: the blur of ``'dark'``.
        pairs: index pairs of keypoints whose labels are ambiguous (the two hands here), decoded
            together by :func:`_decode_pair`; none by default.
    Returns:
        Tensor[B, K, 2]: ``(x, y)`` float32 in image pixels.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [B, K, h, w], got {list(heatmaps.shape)}")
    if method not in DECODERS:
        raise ValueError(f"method must be one of {DECODERS}, got {method!r}")
    maps = heatmaps.detach().float()
    _, _, h, w = maps.shape
    flat_idx = maps.flatten(2).argmax(dim=-1)  # [B, K]
    uv = _refine(maps, flat_idx % w, flat_idx // w, method, blur_sigma)  # [B, K, 2] heatmap pixels
    for a, b in pairs:
        uv[:, [a, b]] = _decode_pair(maps[:, a], maps[:, b], method, blur_sigma)
    scale = torch.tensor([w, h], dtype=torch.float32, device=maps.device)
    return heatmap_to_pixels(uv, image_size, scale)


def decode(method: str, outputs: torch.Tensor, image_size: int = IMAGE_SIZE, decoder: str = "dark",
           pairs: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """Model outputs -> ``Tensor[B, K, 2]`` image pixels: the only place where the two methods differ."""
    if method == "heatmap":
        return extract_keypoints_from_heatmaps(outputs, image_size, decoder, pairs=pairs)  # outputs [B, K, hs, hs]
    if method == "regression":
        return unit_to_pixels(outputs.detach().float().view(outputs.shape[0], -1, 2), image_size)  # [B, 2K]
    raise ValueError(f"unknown method {method!r}")


# --- PCK and errors ----------------------------------------------------------------------------------------------

def normalizer(ground_truths: torch.Tensor, normalize_by: str = "bbox", torso: tuple[int, int, int] = (0, 3, 4)
               ) -> torch.Tensor:
    """Per-image reference length ``Tensor[N]`` for ``ground_truths (Tensor[N, K, 2])``.

    ``'bbox'``: diagonal of the box around the image's ground-truth keypoints. ``'torso'``: distance from
    keypoint ``torso[0]`` (head) to the midpoint of ``torso[1]`` and ``torso[2]`` (the feet); in this
    generator that is always 57 px, so torso-PCK is a fixed-pixel-radius PCK.
    """
    gt = ground_truths.double()
    if normalize_by == "bbox":
        return (gt.amax(dim=1) - gt.amin(dim=1)).norm(dim=-1)
    if normalize_by == "torso":
        return (gt[:, torso[0]] - 0.5 * (gt[:, torso[1]] + gt[:, torso[2]])).norm(dim=-1)
    raise ValueError(f"normalize_by must be 'bbox' or 'torso', got {normalize_by!r}")


def keypoint_errors(predictions: torch.Tensor, ground_truths: torch.Tensor) -> torch.Tensor:
    """Euclidean pixel errors ``Tensor[N, K]`` (float64) of ``[N, K, 2]`` predictions."""
    return (predictions.double() - ground_truths.double()).norm(dim=-1)


def pck_correct(predictions: torch.Tensor, ground_truths: torch.Tensor, thresholds, normalize_by: str = "bbox",
                torso: tuple[int, int, int] = (0, 3, 4)) -> torch.Tensor:
    """``Bool[T, N, K]``: error <= threshold x the image's reference length (see :func:`normalizer`)."""
    t = torch.as_tensor(thresholds, dtype=torch.float64).view(-1, 1, 1)
    ref = normalizer(ground_truths, normalize_by, torso).view(1, -1, 1)  # [1, N, 1]
    return keypoint_errors(predictions, ground_truths)[None] <= t * ref  # [T, N, K]


def compute_pck(predictions: torch.Tensor, ground_truths: torch.Tensor, thresholds=THRESHOLDS,
                normalize_by: str = "bbox", torso: tuple[int, int, int] = (0, 3, 4)) -> dict[float, float]:
    """PCK: ``{threshold: fraction of the N x K keypoints within threshold x reference length}``.

    Args:
        predictions (Tensor[N, K, 2]), ground_truths (Tensor[N, K, 2]): image pixels.
        normalize_by: ``'bbox'`` (diagonal of the ground-truth keypoints' box) or ``'torso'``.
    """
    correct = pck_correct(predictions, ground_truths, thresholds, normalize_by, torso)
    return {float(t): float(v) for t, v in zip(thresholds, correct.double().mean(dim=(1, 2)), strict=True)}


def auc(thresholds, values) -> float:
    """Normalised area under a PCK curve (trapezoids), in [0, 1]."""
    t, v = torch.as_tensor(thresholds, dtype=torch.float64), torch.as_tensor(values, dtype=torch.float64)
    return float(torch.trapezoid(v, t) / (t[-1] - t[0]))


def swap_hands_to_best(predictions: torch.Tensor, ground_truths: torch.Tensor, hands: tuple[int, int]
                       ) -> torch.Tensor:
    """Predictions with the two hands swapped in images where that lowers their summed pixel error.

    Scoring these gives hand-swap-invariant metrics: each image is scored with the better of its two
    hand assignments, so the unidentifiable left/right label costs nothing.
    """
    a, b = hands
    swapped = predictions.clone()
    swapped[:, [a, b]] = predictions[:, [b, a]]
    err = keypoint_errors(predictions, ground_truths)[:, [a, b]].sum(dim=1)  # [N]
    err_swapped = keypoint_errors(swapped, ground_truths)[:, [a, b]].sum(dim=1)
    return torch.where((err_swapped < err)[:, None, None], swapped, predictions)


STRATEGIES = ("bayes", "commit", "midpoint")


def hand_ambiguity_ceiling(ground_truths: torch.Tensor, thresholds, hands: tuple[int, int] = (1, 2),
                           normalize_by: str = "bbox", torso: tuple[int, int, int] = (0, 3, 4),
                           strategy: str = "bayes") -> dict[float, float]:
    """Bayes ceiling of PCK when the image cannot tell which hand carries which label.

    The generator draws both arms alike, with independent angles, so given the image the label
    ``left_hand`` is on either hand with probability 1/2. A guess ``p`` for one hand label earns
    ``P(correct) = 1/2 [|p - h1| <= r] + 1/2 [|p - h2| <= r]`` with ``r`` the threshold radius. That is 1
    when one point lies within ``r`` of both hands, i.e. their distance ``d <= 2r`` (predict the
    midpoint), and 1/2 otherwise (commit to one assignment). This equals the better of the two
    strategies (``'commit'``: 1 if ``d <= r`` else 1/2; ``'midpoint'``: 1 if ``d <= 2r`` else 0), which
    ``strategy`` can also score alone. Every other keypoint is taken as perfectly predicted, so per image
    the ceiling is ``(K - 2 + 2 c) / K``. The Bayes choice depends on ``r``: no single set of predictions
    reaches it at every threshold at once (see :func:`best_single_prediction_sum`).

    Args:
        ground_truths (Tensor[N, K, 2]): image pixels; hands: indices of the two hand keypoints.
    Returns:
        ``{threshold: expected PCK of the strategy}``.
    """
    gt = ground_truths.double()
    n, k, _ = gt.shape
    t = torch.as_tensor(thresholds, dtype=torch.float64)[:, None]  # [T, 1]
    r = t * normalizer(gt, normalize_by, torso)[None]  # [T, N]
    d = (gt[:, hands[0]] - gt[:, hands[1]]).norm(dim=-1)[None]  # [1, N]
    commit = 0.5 + 0.5 * (d <= r).double()  # [T, N], expected credit per hand label
    midpoint = (d <= 2 * r).double()
    hand_credit = {"bayes": torch.maximum(commit, midpoint), "commit": commit, "midpoint": midpoint}[strategy]
    per_image = (k - 2 + 2 * hand_credit) / k
    return {float(x): float(v) for x, v in zip(thresholds, per_image.mean(dim=1), strict=True)}


def best_single_prediction_sum(ground_truths: torch.Tensor, thresholds, hands: tuple[int, int] = (1, 2)) -> float:
    """Upper bound of ``sum_t PCK_t`` (bbox) for ONE set of predictions scored at all ``thresholds``.

    Per image and hand label the best guess lies on the segment between the hands, at distance ``a``
    from one of them: it earns ``1/2 [a <= r_t] + 1/2 [d - a <= r_t]`` at threshold ``t``. Only ``a`` in
    ``{0, d/2} U {d - r_t}`` can be optimal; the best per image, summed over thresholds and averaged,
    bounds what any model can reach. Compare it with the sum of :func:`hand_ambiguity_ceiling`.
    """
    gt = ground_truths.double()
    k = gt.shape[1]
    t = torch.as_tensor(thresholds, dtype=torch.float64)  # [T]
    r = t[None] * normalizer(gt)[:, None]  # [N, T]
    d = (gt[:, hands[0]] - gt[:, hands[1]]).norm(dim=-1)[:, None]  # [N, 1]
    a = torch.cat([torch.zeros_like(d), d / 2, (d - r).clamp(min=0).minimum(d / 2)], dim=1)  # [N, A] candidates
    credit = 0.5 * (a[..., None] <= r[:, None]).double() + 0.5 * ((d - a)[..., None] <= r[:, None]).double()
    best = credit.sum(dim=-1).amax(dim=1)  # [N, A, T] -> [N]
    return float(((k - 2) * len(t) + 2 * best).mean() / k)


def _by_threshold(d: dict[float, float]) -> dict[str, float]:
    return {f"{t:g}": v for t, v in d.items()}


def _score(pred: torch.Tensor, gt: torch.Tensor, names: list[str], torso: tuple[int, int, int] | None) -> dict:
    err = keypoint_errors(pred, gt)  # [N, K]
    curve = compute_pck(pred, gt, DENSE_THRESHOLDS)
    per_kp = pck_correct(pred, gt, THRESHOLDS).double().mean(dim=1)  # [T, K]
    out = {
        "pck": _by_threshold(compute_pck(pred, gt, THRESHOLDS)),
        "auc": auc(DENSE_THRESHOLDS, list(curve.values())),
        "curve": list(curve.values()),
        "mean_px_error": float(err.mean()),
        "per_keypoint": {name: {"pck": {f"{t:g}": float(per_kp[i, j]) for i, t in enumerate(THRESHOLDS)},
                                "mean_px_error": float(err[:, j].mean())} for j, name in enumerate(names)},
    }
    if torso is not None:
        out["pck_torso"] = _by_threshold(compute_pck(pred, gt, THRESHOLDS, "torso", torso))
    return out


def keypoint_metrics(predictions: torch.Tensor, ground_truths: torch.Tensor, keypoint_names: list[str],
                     hands: tuple[int, int] | None) -> dict:
    """Every reported number for one method: PCK (bbox, torso), curve + AUC, per keypoint, pixel error,
    and, when the data has two hands, the same again hand-swap-invariant (``'swap_invariant'``)."""
    names = list(keypoint_names)
    torso = tuple(names.index(n) for n in TORSO) if all(n in names for n in TORSO) else None
    out = _score(predictions, ground_truths, names, torso)
    if hands is not None:
        out["swap_invariant"] = _score(swap_hands_to_best(predictions, ground_truths, hands), ground_truths, names,
                                       torso)
    return out


def ceiling_metrics(ground_truths: torch.Tensor, hands: tuple[int, int]) -> dict:
    """The Bayes ceiling (``pck``, ``auc``, ``curve``), its two strategies alone, and the single-prediction bound."""
    out = {}
    for strategy in STRATEGIES:
        curve = hand_ambiguity_ceiling(ground_truths, DENSE_THRESHOLDS, hands, strategy=strategy)
        out[strategy] = {"pck": _by_threshold(hand_ambiguity_ceiling(ground_truths, THRESHOLDS, hands,
                                                                     strategy=strategy)),
                         "auc": auc(DENSE_THRESHOLDS, list(curve.values())), "curve": list(curve.values())}
    bayes = out.pop("bayes")
    return {**bayes, "strategies": out, "sum_over_thresholds": sum(bayes["pck"].values()),
            "best_single_prediction_sum": best_single_prediction_sum(ground_truths, THRESHOLDS, hands)}


# --- the evaluation path (also run every epoch by train.py) -------------------------------------------------------

def ambiguous_pairs(dataset: KeypointDataset, hand_pairs: bool = True) -> tuple[tuple[int, int], ...]:
    """The keypoint pairs to decode jointly: the hands, unless disabled or relabelled canonically."""
    return (dataset.hands,) if hand_pairs and dataset.hands is not None and not dataset.canonical_hands else ()


@torch.no_grad()
def predict(model: torch.nn.Module, method: str, dataset: KeypointDataset, batch_size: int = 64,
            decoder: str = "dark", amp: bool = True, keep_outputs: int = 0, hand_pairs: bool = True) -> dict:
    """Run ``model`` over ``dataset`` in file order: ``{'loss', 'predictions' [N, K, 2] px, 'outputs'}``.

    ``outputs`` holds the raw outputs of the first ``keep_outputs`` images (for figures) on the CPU.
    ``hand_pairs``: decode the two hand heatmaps jointly (see :func:`_decode_pair`).
    """
    model.eval()
    pairs = ambiguous_pairs(dataset, hand_pairs)
    criterion = KeypointMSELoss()
    loss_sum = torch.zeros((), device=dataset.device)
    preds, kept = [], []
    for images, targets, _ in dataset.batches(batch_size):
        with autocast(images.device, amp):
            out = model(images)
        loss_sum += criterion(out, targets)["loss"] * len(images)
        preds.append(decode(method, out, dataset.image_size, decoder, pairs).cpu())
        if sum(len(o) for o in kept) < keep_outputs:
            kept.append(out.float().cpu())
    outputs = torch.cat(kept)[:keep_outputs] if kept else None
    return {"loss": float(loss_sum) / len(dataset), "predictions": torch.cat(preds), "outputs": outputs}


def evaluate(model: torch.nn.Module, method: str, dataset: KeypointDataset, batch_size: int = 64,
             decoder: str = "dark", amp: bool = True, keep_outputs: int = 0, hand_pairs: bool = True) -> dict:
    """Validation loss and every metric of one model: ``{'loss', 'metrics', 'predictions', 'outputs'}``."""
    out = predict(model, method, dataset, batch_size, decoder, amp, keep_outputs, hand_pairs)
    out["metrics"] = keypoint_metrics(out["predictions"], dataset.keypoints.cpu(), dataset.keypoint_names,
                                      dataset.hands)
    return out


def load_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model from its checkpoint alone; returns ``(model in eval mode, checkpoint)``."""
    ckpt = load_checkpoint(path, PROBLEM)
    cfg = ckpt.get("config")
    need = ("method", "num_keypoints", "heatmap_size", "skip", "keypoint_names", "canonical_hands", "decoder", "sigma")
    if not isinstance(cfg, dict) or cfg.get("method") not in METHODS or any(k not in cfg for k in need):
        raise UserError(f"{path}: not a model checkpoint of problem2/train.py (its config lacks the method or "
                        "model settings)")
    try:
        model = build_model(cfg["method"], cfg["num_keypoints"], cfg["heatmap_size"], cfg["skip"])
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    load_weights(model, ckpt["model"], path)
    # checkpoints made before the option existed ran channels-last too (see common.runtime.memory_format)
    return model.to(device, memory_format=memory_format(cfg.get("channels_last", True))).eval(), ckpt


# --- failure analysis ----------------------------------------------------------------------------------------------

def failure_groups(pred_heatmap: torch.Tensor, pred_regression: torch.Tensor, gt: torch.Tensor,
                   names: list[str], threshold: float = FAILURE_THRESHOLD) -> dict:
    """Keypoints (N x K instances) at PCK@threshold: heatmap right & regression wrong, the reverse, both wrong."""
    ok_h = pck_correct(pred_heatmap, gt, [threshold])[0]  # [N, K]
    ok_r = pck_correct(pred_regression, gt, [threshold])[0]
    groups = {"heatmap_right_regression_wrong": ok_h & ~ok_r, "regression_right_heatmap_wrong": ~ok_h & ok_r,
              "both_wrong": ~ok_h & ~ok_r}
    return {g: {"count": int(m.sum()), "images": int(m.any(dim=1).sum()),
                "per_keypoint": {n: int(m[:, j].sum()) for j, n in enumerate(names)}, "mask": m}
            for g, m in groups.items()}


# --- figures -------------------------------------------------------------------------------------------------------

COLORS = {"gt": "#2ca02c", "heatmap": "#d62728", "regression": "#1f77b4", "ceiling": "black"}
MARKERS = {"gt": "o", "heatmap": "x", "regression": "+"}


def _show_points(ax, image, points: dict[str, torch.Tensor], title: str = ""):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    for key, p in points.items():
        style = {"facecolors": "none", "edgecolors": COLORS[key]} if key == "gt" else {"c": COLORS[key]}
        ax.scatter(p[:, 0], p[:, 1], s=30 if key == "gt" else 45, marker=MARKERS[key], linewidths=1.5, label=key,
                   **style)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_pck_curves(metrics: dict, path: Path, title: str = "PCK on the validation set") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method in METHODS:
        if method in metrics["methods"]:
            m = metrics["methods"][method]["metrics"]
            ax.plot(DENSE_THRESHOLDS, m["curve"], color=COLORS[method], label=f"{method} (AUC {m['auc']:.3f})")
            if "swap_invariant" in m:
                s = m["swap_invariant"]
                ax.plot(DENSE_THRESHOLDS, s["curve"], color=COLORS[method], ls=":",
                        label=f"{method}, hand-swap-invariant (AUC {s['auc']:.3f})")
    if metrics.get("ceiling"):
        c = metrics["ceiling"]
        ax.plot(DENSE_THRESHOLDS, c["curve"], color=COLORS["ceiling"], ls="--",
                label=f"hand-ambiguity ceiling (AUC {c['auc']:.3f})")
        for strategy, ls in (("commit", (0, (1, 2))), ("midpoint", "-.")):
            ax.plot(DENSE_THRESHOLDS, c["strategies"][strategy]["curve"], color="0.55", ls=ls, lw=1,
                    label=f"ceiling of '{strategy}' alone (AUC {c['strategies'][strategy]['auc']:.3f})")
    for t in THRESHOLDS:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="threshold (fraction of the ground-truth keypoint box diagonal)", ylabel="PCK", xlim=(0, 0.5),
           ylim=(0, 1.01), title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def plot_samples(images: torch.Tensor, gt: torch.Tensor, preds: dict[str, torch.Tensor], path: Path) -> None:
    plt = pyplot()
    n = len(images)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        pts = {"gt": gt[i], **{m: p[i] for m, p in preds.items()}}
        errs = ", ".join(f"{m[0]} {keypoint_errors(p[i:i + 1], gt[i:i + 1]).mean():.1f}px" for m, p in preds.items())
        _show_points(ax, images[i, 0], pts, f"val #{i}: {errs}")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle("Predictions vs ground truth (o GT, x heatmap, + regression; mean error per image)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def plot_heatmaps(images: torch.Tensor, heatmaps: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor,
                  names: list[str], path: Path, row_titles: list[str] | None = None, title: str = "") -> None:
    """One row per image: the image, then each keypoint's map (GT o, decoded x, in heatmap pixels)."""
    plt = pyplot()
    n, k = heatmaps.shape[:2]
    hs = heatmaps.shape[-1]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n), squeeze=False)
    for i in range(n):
        _show_points(axes[i, 0], images[i, 0], {"gt": gt[i], "heatmap": pred[i]},
                     row_titles[i] if row_titles else f"val #{i}")
        gt_uv, pred_uv = pixels_to_heatmap(gt[i], IMAGE_SIZE, hs), pixels_to_heatmap(pred[i], IMAGE_SIZE, hs)
        for j in range(k):
            ax = axes[i, j + 1]
            ax.imshow(heatmaps[i, j], cmap="magma", vmin=0, vmax=max(1.0, float(heatmaps[i, j].max())))
            ax.scatter(gt_uv[j, 0], gt_uv[j, 1], s=30, marker="o", facecolors="none", edgecolors=COLORS["gt"])
            ax.scatter(pred_uv[j, 0], pred_uv[j, 1], s=30, marker="x", c="cyan")
            ax.set_title(f"{names[j]} (max {float(heatmaps[i, j].max()):.2f})", fontsize=7)
            ax.axis("off")
    fig.suptitle(title or f"Predicted heatmaps ({hs}x{hs}; colour scale 0..1; o GT, x decoded)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def plot_failures(images: torch.Tensor, gt: torch.Tensor, preds: dict[str, torch.Tensor], groups: dict,
                  path: Path, per_group: int = 4) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(3, per_group, figsize=(2.6 * per_group, 8.4), squeeze=False)
    for row, (name, g) in enumerate(groups.items()):
        mask = g["mask"]  # [N, K]
        order = sorted(range(len(mask)), key=lambda i: (-int(mask[i].sum()), i))[:per_group]
        order = [i for i in order if mask[i].any()]
        for col in range(per_group):
            ax = axes[row, col]
            if col >= len(order):
                ax.axis("off")
                continue
            i = order[col]
            _show_points(ax, images[i, 0], {"gt": gt[i], **{m: p[i] for m, p in preds.items()}}, f"val #{i}")
            bad = mask[i].nonzero().flatten()
            ax.scatter(gt[i, bad, 0], gt[i, bad, 1], s=260, facecolors="none", edgecolors="orange", linewidths=1.5)
        axes[row, 0].text(-0.08, 0.5, f"{name.replace('_', ' ')}\n{g['count']} keypoints / {g['images']} images",
                          transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    fig.suptitle(f"Failure cases at PCK@{FAILURE_THRESHOLD:g} (orange rings: the keypoints in the group; "
                 "o GT, x heatmap, + regression)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def plot_training_curves(log: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for method in METHODS:
        recs = [r for r in log if r.get("model") == method]
        if not recs:
            continue
        ep = [r["epoch"] for r in recs]
        ax1.semilogy(ep, [r["train"]["loss"] for r in recs], color=COLORS[method], label=f"{method} train")
        ax1.semilogy(ep, [r["val"]["loss"] for r in recs], color=COLORS[method], ls="--", label=f"{method} val")
        for t, ls in zip(("0.05", "0.2"), ("-", ":"), strict=True):
            ax2.plot(ep, [r["val"]["pck"][t] for r in recs], color=COLORS[method], ls=ls, label=f"{method} PCK@{t}")
    ax1.set(xlabel="epoch", ylabel="MSE (not comparable across methods)", title="Loss")
    ax2.set(xlabel="epoch", ylabel="validation PCK (bbox)", ylim=(0, 1.01), title="Validation PCK")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


# --- reports -------------------------------------------------------------------------------------------------------

def _row(label: str, pck: dict, extra: list[str]) -> str:
    return "| " + " | ".join([label, *(f"{pck[f'{t:g}']:.3f}" for t in THRESHOLDS), *extra]) + " |"


def _pck_table(metrics: dict) -> list[str]:
    head = ["| | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS) + " | AUC 0-0.5 | mean px error |",
            "|---" * (len(THRESHOLDS) + 3) + "|"]
    rows = []
    for method, res in metrics["methods"].items():
        m = res["metrics"]
        rows.append(_row(method, m["pck"], [f"{m['auc']:.3f}", f"{m['mean_px_error']:.2f}"]))
        if "swap_invariant" in m:
            s = m["swap_invariant"]
            rows.append(_row(f"{method}, hand-swap-invariant", s["pck"],
                             [f"{s['auc']:.3f}", f"{s['mean_px_error']:.2f}"]))
    if metrics.get("ceiling"):
        rows.append(_row("hand-ambiguity ceiling", metrics["ceiling"]["pck"], [f"{metrics['ceiling']['auc']:.3f}", ""]))
    return head + rows


def _main_sections(metrics: dict) -> list[str]:
    lines = [f"Command: `{metrics['command']}`  ", f"Validation images: {metrics['num_images']} "
             f"(`{metrics['data_dir']}`); device {metrics['device']}; hand labelling: {metrics['labelling']}.", ""]
    for method, res in metrics["methods"].items():
        c = res["config"]
        lines.append(f"- {method}: `{res['checkpoint']}` (best validation loss, epoch {res['epoch']} of "
                     f"{c['epochs']}; seed {c['seed']}, lr {c['lr']}, batch {c['batch_size']}"
                     + (f", sigma {c['sigma']}, {c['heatmap_size']}x{c['heatmap_size']}, skip {c['skip']}, "
                        f"decoder {c['decoder']}, hands {'jointly' if c.get('hand_pairs', True) else 'each map alone'}"
                        if method == "heatmap" else "") + ")")
    lines += ["", "PCK normalised by the diagonal of the ground-truth keypoint box:", "", *_pck_table(metrics), ""]
    if metrics.get("ceiling"):
        c = metrics["ceiling"]
        lines += ["The ceiling is the Bayes-optimal PCK when the image cannot show which hand is `left_hand` "
                  "(both arms are drawn alike): per image, 1 credit per hand if the hands are within 2r of each "
                  "other (predict their midpoint), else 1/2 (commit to one assignment); the other keypoints "
                  "perfect. Hand-swap-invariant rows score each image with the better hand assignment.", "",
                  "The two strategies alone, and what one set of predictions can reach:", "",
                  "| | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS) + " | sum |", "|---" * (len(THRESHOLDS) + 2)
                  + "|", _row("always commit (distinct hands)", c["strategies"]["commit"]["pck"],
                              [f"{sum(c['strategies']['commit']['pck'].values()):.3f}"]),
                  _row("always the midpoint (the MSE optimum of regression)", c["strategies"]["midpoint"]["pck"],
                       [f"{sum(c['strategies']['midpoint']['pck'].values()):.3f}"]),
                  _row("Bayes ceiling (a different choice per threshold)", c["pck"],
                       [f"{c['sum_over_thresholds']:.3f}"]),
                  "", f"The Bayes choice depends on the threshold, so no single set of predictions reaches the "
                  f"ceiling at every threshold at once: the best any predictor can expect, summed over the four "
                  f"thresholds, is {c['best_single_prediction_sum']:.3f} (ceiling: {c['sum_over_thresholds']:.3f}).",
                  ""]
    torso = {m: r["metrics"].get("pck_torso") for m, r in metrics["methods"].items()}
    if all(torso.values()):
        lines += ["PCK normalised by torso length (head to the midpoint of the feet, 57 px in this data):", "",
                  "| | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS) + " |", "|---" * (len(THRESHOLDS) + 1) + "|",
                  *(_row(m, p, []) for m, p in torso.items()), ""]
    names = next(iter(metrics["methods"].values()))["metrics"]["per_keypoint"].keys()
    lines += [f"Per keypoint, PCK@{FAILURE_THRESHOLD:g} / mean pixel error:", "",
              "| keypoint | " + " | ".join(metrics["methods"]) + " |", "|---" * (len(metrics["methods"]) + 1) + "|"]
    for n in names:
        cells = [f"{r['metrics']['per_keypoint'][n]['pck'][f'{FAILURE_THRESHOLD:g}']:.3f} / "
                 f"{r['metrics']['per_keypoint'][n]['mean_px_error']:.2f} px" for r in metrics["methods"].values()]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    if metrics.get("decoders"):
        lines += ["Heatmap decoders on the same heatmaps (\"hands jointly\": one prediction per hand, see "
                  "`_decode_pair` in problem2/evaluate.py):", "",
                  "| decoder | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS)
                  + " | swap-inv. PCK@0.05 | mean px error |", "|---" * (len(THRESHOLDS) + 3) + "|",
                  *(_row(d, v["pck"], [f"{v['swap_invariant_pck']['0.05']:.3f}", f"{v['mean_px_error']:.2f}"])
                    for d, v in metrics["decoders"].items()), ""]
    if metrics.get("failures"):
        lines += [f"Failure cases at PCK@{FAILURE_THRESHOLD:g} (keypoint instances, of "
                  f"{metrics['num_images']} x {len(names)}; images with at least one):", "",
                  "| group | keypoints | images | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
        for g, v in metrics["failures"].items():
            lines.append(f"| {g.replace('_', ' ')} | {v['count']} | {v['images']} | "
                         + " | ".join(str(v["per_keypoint"][n]) for n in names) + " |")
        lines.append("")
    return lines


def _hypothesis_section(main: dict, canon: dict, canon_dir: Path) -> list[str]:
    lines = ["## Hypothesis test: is regression's deficit the hand ambiguity?", "",
             f"Both models retrained on a **derived labelling** (`--canonical-hands`, results in `{canon_dir}`): "
             "the hand with the smaller x is labelled `left_hand`, so the label is a function of the image and "
             "the ambiguity is gone (ceiling 1). Scores there are against the derived labels.", "",
             "| | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS) + " | AUC | mean px error |",
             "|---" * (len(THRESHOLDS) + 3) + "|"]
    rows = {}
    for label, m in (("original labels", main), ("canonical hands (derived)", canon)):
        for method, res in m["methods"].items():
            x = res["metrics"]
            rows[method, label] = x["pck"]["0.05"]
            lines.append(_row(f"{method}, {label}", x["pck"], [f"{x['auc']:.3f}", f"{x['mean_px_error']:.2f}"]))
            if label == "original labels" and "swap_invariant" in x:
                s = x["swap_invariant"]
                lines.append(_row(f"{method}, original labels, hand-swap-invariant", s["pck"],
                                  [f"{s['auc']:.3f}", f"{s['mean_px_error']:.2f}"]))
    keys = [(m, lab) for m in METHODS for lab in ("original labels", "canonical hands (derived)")]
    if all(k in rows for k in keys):
        before = rows["heatmap", "original labels"] - rows["regression", "original labels"]
        after = rows["heatmap", "canonical hands (derived)"] - rows["regression", "canonical hands (derived)"]
        share = f" (the ambiguity accounts for {1 - after / before:.0%} of it)" if before > 0 else ""
        lines += ["", f"Regression's deficit to the heatmap at PCK@0.05: {before:.3f} with the original labels, "
                  f"{after:.3f} with the canonical ones{share}."]
    lines += ["", f"Command: `{canon['command']}`", ""]
    return lines


def _ablation_section(abl: dict) -> list[str]:
    lines = ["## Ablations (heatmap model, judged by validation PCK)", "",
             f"Command: `{abl['command']}`  ",
             f"{abl['epochs']} epochs per run, seed {abl['seed']}; each run's best-validation-loss checkpoint "
             "(validation loss is only compared within a run). Sigma is in heatmap pixels, so at other "
             "resolutions sigma 2 is a different width in image pixels (8 px at 32x32, 2 px at 128x128).", "",
             "| ablation | run | sigma | heatmap | skip | " + " | ".join(f"PCK@{t:g}" for t in THRESHOLDS)
             + " | AUC | swap-inv. PCK@0.05 | mean px error | epoch | train time |",
             "|---" * (len(THRESHOLDS) + 10) + "|"]
    for family, names in abl["families"].items():
        for name in names:
            r = abl["runs"][name]
            m = r["metrics"]
            lines.append(f"| {family} | {name} | {r['sigma']:g} | {r['heatmap_size']} | {r['skip']} | "
                         + " | ".join(f"{m['pck'][f'{t:g}']:.3f}" for t in THRESHOLDS)
                         + f" | {m['auc']:.3f} | {m.get('swap_invariant', m)['pck']['0.05']:.3f} | "
                         f"{m['mean_px_error']:.2f} | {r['epoch']} | {r['train_time_s'] / 60:.1f} min |")
    lines.append("")
    return lines


def write_summary(results_dir: str | Path) -> Path:
    """(Re)write ``summary.md`` from whatever the scripts left in ``results_dir``: ``metrics.json``,
    ``ablation.json`` and the hypothesis test's ``canonical_hands/metrics.json``."""
    results_dir = Path(results_dir)
    lines = ["# Problem 2: heatmap vs direct regression", "",
             "Every number below is read from the JSON files next to this summary.", ""]
    metrics_path = results_dir / "metrics.json"
    main = load_json(metrics_path) if metrics_path.is_file() else None
    if main:
        lines += ["## Evaluation", "", *_main_sections(main)]
        figs = sorted(p.name for p in (results_dir / "figures").glob("*.png")) if (results_dir / "figures").is_dir() \
            else []
        if figs:
            lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in figs), ""]
    canon_path = results_dir / "canonical_hands" / "metrics.json"
    if main and canon_path.is_file():
        lines += _hypothesis_section(main, load_json(canon_path), canon_path.parent)
    abl_path = results_dir / "ablation.json"
    if abl_path.is_file():
        lines += _ablation_section(load_json(abl_path))
    return atomic_write_text(results_dir / "summary.md", "\n".join(lines))


# --- CLI -----------------------------------------------------------------------------------------------------------

@dataclass
class EvalConfig:
    data_dir: str = cfg_field("./datasets", "datasets root (with keypoints/) or the keypoints folder itself")
    results_dir: str = cfg_field("results/problem2", "folder with heatmap_model.pth / regression_model.pth; "
                                                     "metrics.json, summary.md and figures/ are written here")
    device: str = cfg_field("auto", "auto, cpu, cuda, cuda:N or mps")
    batch_size: int = cfg_field(64, "inference batch size", min=1)
    decoder: str = cfg_field("", "heatmap decoder (default: the one the model was trained with)",
                             choices=["", *DECODERS])


def run_evaluation(cfg: EvalConfig, command: str) -> dict:
    device = pick_device(cfg.device)
    results_dir = Path(cfg.results_dir)
    paths = {m: results_dir / f"{m}_model.pth" for m in METHODS if (results_dir / f"{m}_model.pth").is_file()}
    if not paths:
        raise UserError(f"{results_dir}: no heatmap_model.pth or regression_model.pth (run problem2/train.py first)")
    # Load and check everything before writing anything.
    models = {m: load_model(p, device) for m, p in paths.items()}
    canonical = {ck["config"]["canonical_hands"] for _, ck in models.values()}
    if len(canonical) > 1:
        raise UserError(f"{results_dir}: the two models were trained with different hand labellings")
    canonical_hands = canonical.pop()
    base = load_split(cfg.data_dir, "val", canonical_hands=canonical_hands).to(device)
    gt = base.keypoints.cpu()
    names = base.keypoint_names
    for m, (_, ck) in models.items():
        if ck["config"]["keypoint_names"] != names:
            raise UserError(f"{paths[m]}: trained on keypoints {ck['config']['keypoint_names']}, the data has {names}")
    log_path, snap_path = results_dir / "training_log.json", results_dir / "heatmap_snapshots.pt"
    log = load_json_list(log_path) if log_path.is_file() else None
    snaps = load_snapshots(snap_path) if snap_path.is_file() and "heatmap" in models else None

    n_fig = min(8, len(base))
    metrics: dict = {"command": command, "data_dir": str(cfg.data_dir), "device": str(device), "num_images": len(base),
                     "labelling": "canonical hands by x order (derived)" if canonical_hands else "as in the file",
                     "thresholds": list(THRESHOLDS), "dense_thresholds": list(DENSE_THRESHOLDS), "methods": {}}
    results = {}
    for m, (model, ck) in models.items():
        c = ck["config"]
        ds = base.with_targets(m, c["heatmap_size"], c["sigma"])
        decoder = cfg.decoder or c["decoder"]
        hand_pairs = c.get("hand_pairs", True)
        res = evaluate(model, m, ds, cfg.batch_size, decoder, c.get("amp", True),
                       keep_outputs=len(ds) if m == "heatmap" else n_fig, hand_pairs=hand_pairs)
        results[m] = res
        metrics["methods"][m] = {"checkpoint": str(paths[m]), "epoch": ck["epoch"], "config": c, "decoder": decoder,
                                 "val_loss": res["loss"], "metrics": res["metrics"]}
        if m == "heatmap":  # the same heatmaps through every decoder, hands jointly and each map alone
            metrics["decoders"] = {}
            for d in DECODERS:
                for pairs in dict.fromkeys([ambiguous_pairs(ds, True), ()]):
                    p = extract_keypoints_from_heatmaps(res["outputs"], ds.image_size, d, pairs=pairs)
                    ps = swap_hands_to_best(p, gt, base.hands) if base.hands is not None else p
                    name = d + (", hands jointly" if pairs else ", each map alone")
                    metrics["decoders"][name] = {"pck": _by_threshold(compute_pck(p, gt)),
                                                 "swap_invariant_pck": _by_threshold(compute_pck(ps, gt)),
                                                 "mean_px_error": float(keypoint_errors(p, gt).mean())}
    if base.hands is not None and not canonical_hands:
        metrics["ceiling"] = ceiling_metrics(gt, base.hands)
    if len(results) == 2:
        groups = failure_groups(results["heatmap"]["predictions"], results["regression"]["predictions"], gt, names)
        metrics["failures"] = {g: {k: v for k, v in d.items() if k != "mask"} for g, d in groups.items()}

    # Figures, then the JSON and the summary that point at them.
    fig_dir = results_dir / "figures"
    images = base.images.cpu().float() / 255.0
    preds = {m: r["predictions"] for m, r in results.items()}
    plot_pck_curves(metrics, fig_dir / "pck_curves.png")
    plot_samples(images[:n_fig], gt[:n_fig], {m: p[:n_fig] for m, p in preds.items()},
                 fig_dir / "sample_predictions.png")
    if "heatmap" in results:
        k = min(3, n_fig)
        plot_heatmaps(images[:k], results["heatmap"]["outputs"][:k], gt[:k], preds["heatmap"][:k], names,
                      fig_dir / "predicted_heatmaps.png")
        if snaps is not None:
            plot_training_stages(snaps, images, gt, names, fig_dir / "heatmaps_during_training.png")
    if len(results) == 2:
        plot_failures(images, gt, preds, groups, fig_dir / "failure_cases.png")
    if log is not None:
        plot_training_curves(log, fig_dir / "training_curves.png")
    atomic_write_json(results_dir / "metrics.json", metrics)
    write_summary(results_dir)
    if canonical_hands and results_dir.name == "canonical_hands" and (results_dir.parent / "metrics.json").is_file():
        write_summary(results_dir.parent)  # its hypothesis-test section reads this run
    return metrics


def load_json_list(path: Path) -> list:
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(obj, list) or not all(isinstance(r, dict) and {"model", "epoch", "train", "val"} <= set(r)
                                            for r in obj):
        raise UserError(f"{path}: expected a list of per-epoch records written by problem2/train.py")
    return obj


def load_snapshots(path: Path) -> dict:
    try:
        snaps = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise UserError(f"{path}: not a readable snapshot file ({type(e).__name__})") from None
    if not isinstance(snaps, dict) or not {"epochs", "val_indices"} <= set(snaps):
        raise UserError(f"{path}: not a heatmap snapshot file written by problem2/train.py")
    return snaps


def plot_training_stages(snaps: dict, images: torch.Tensor, gt: torch.Tensor, names: list[str], out_path: Path,
                         image_index: int = 0) -> None:
    """Heatmaps of one fixed validation image at the snapshot epochs (rows) per keypoint (columns)."""
    epochs = sorted(snaps["epochs"])
    i = snaps["val_indices"][image_index]
    maps = torch.stack([snaps["epochs"][e][image_index].float() for e in epochs])  # [E, K, hs, hs]
    hs = maps.shape[-1]
    pred = extract_keypoints_from_heatmaps(maps)
    plot_heatmaps(images[i:i + 1].expand(len(epochs), -1, -1, -1), maps, gt[i:i + 1].expand(len(epochs), -1, -1),
                  pred, names, out_path, row_titles=[f"epoch {e}" for e in epochs],
                  title=f"Heatmaps of val #{i} during training ({hs}x{hs}; o GT, x decoded)")


def main(argv: list[str] | None = None) -> None:
    cfg, _ = parse_config(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    command = "python problem2/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    metrics = run_evaluation(cfg, command.strip())
    for m, r in metrics["methods"].items():
        p = r["metrics"]["pck"]
        print(f"{m:>10}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in p.items())
              + f"  mean error {r['metrics']['mean_px_error']:.2f} px")
    if metrics.get("ceiling"):
        print(f"{'ceiling':>10}: " + "  ".join(f"PCK@{t}={v:.3f}" for t, v in metrics["ceiling"]["pck"].items()))
    print(f"wrote {Path(cfg.results_dir) / 'metrics.json'}, summary.md and figures/")


if __name__ == "__main__":
    run_cli(main)
