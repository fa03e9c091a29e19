"""Keypoint metrics on decoded predictions (image pixels): PCK and its AUC, the hand-ambiguity ceiling, hand-swap
invariant scoring, where hand predictions land, how much predictions follow the figure, and failure groups. Pure
functions of ``Tensor[N, K, 2]`` predictions and ground truths, shared by every method (their codecs decode to the
same pixel frame).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

THRESHOLDS = (0.05, 0.1, 0.15, 0.2)  # the tables
DENSE_THRESHOLDS = tuple(round(0.005 * i, 3) for i in range(101))  # the curve, 0 .. 0.5
FAILURE_THRESHOLD = 0.1
TORSO = ("head", "left_foot", "right_foot")  # torso length: head to the midpoint of the feet
STRATEGIES = ("bayes", "commit", "midpoint")
KEYPOINT_GROUPS = {"head": ("head",), "hands": ("left_hand", "right_hand"), "feet": ("left_foot", "right_foot")}
HAND_NEAR = 0.05  # "near" a point: within the PCK@0.05 radius (fraction of the keypoint box diagonal)
HAND_APART = 2.0  # hands "apart": more than 2 radii apart, where their midpoint is wrong for both at PCK@0.05


# --- PCK and errors ----------------------------------------------------------------------------------------------

def reference_length(ground_truths: torch.Tensor, normalize_by: str = "bbox", torso: tuple[int, int, int] = (0, 3, 4)
                     ) -> torch.Tensor:
    """Per-image length that PCK thresholds are fractions of: ``Tensor[N]`` for ``ground_truths (Tensor[N, K, 2])``.

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
    """``Bool[T, N, K]``: error <= threshold x the image's reference length (see :func:`reference_length`)."""
    t = torch.as_tensor(thresholds, dtype=torch.float64).view(-1, 1, 1)
    ref = reference_length(ground_truths, normalize_by, torso).view(1, -1, 1)  # [1, N, 1]
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


def by_threshold(values: dict[float, float]) -> dict[str, float]:
    """``{0.05: v}`` -> ``{'0.05': v}``: the JSON keys of every per-threshold number."""
    return {f"{t:g}": v for t, v in values.items()}


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


# --- every number of one method ----------------------------------------------------------------------------------

def _pck_and_errors(pred: torch.Tensor, gt: torch.Tensor, names: list[str], torso: tuple[int, int, int] | None
                    ) -> dict:
    """PCK at :data:`THRESHOLDS`, the dense curve and its AUC, mean pixel error, per keypoint; torso PCK if known."""
    err = keypoint_errors(pred, gt)  # [N, K]
    curve = compute_pck(pred, gt, DENSE_THRESHOLDS)
    per_kp = pck_correct(pred, gt, THRESHOLDS).double().mean(dim=1)  # [T, K]
    out = {
        "pck": by_threshold(compute_pck(pred, gt, THRESHOLDS)),
        "auc": auc(DENSE_THRESHOLDS, list(curve.values())),
        "curve": list(curve.values()),
        "mean_px_error": float(err.mean()),
        "per_keypoint": {name: {"pck": {f"{t:g}": float(per_kp[i, j]) for i, t in enumerate(THRESHOLDS)},
                                "mean_px_error": float(err[:, j].mean())} for j, name in enumerate(names)},
    }
    if torso is not None:
        out["pck_torso"] = by_threshold(compute_pck(pred, gt, THRESHOLDS, "torso", torso))
    return out


def keypoint_metrics(predictions: torch.Tensor, ground_truths: torch.Tensor, keypoint_names: Sequence[str],
                     hands: tuple[int, int] | None) -> dict:
    """Every reported number for one method: PCK (bbox, torso), curve + AUC, per keypoint, pixel error, how much the
    predictions follow the figure (``'spread'``), and, when the data has two hands, the same PCK and errors again
    hand-swap-invariant (``'swap_invariant'``) and where the hand predictions land (``'hand_placement'``)."""
    names = list(keypoint_names)
    torso = tuple(names.index(n) for n in TORSO) if all(n in names for n in TORSO) else None
    out = _pck_and_errors(predictions, ground_truths, names, torso)
    out["spread"] = prediction_spread(predictions, ground_truths)
    if hands is not None:
        out["swap_invariant"] = _pck_and_errors(swap_hands_to_best(predictions, ground_truths, hands), ground_truths,
                                                names, torso)
        out["hand_placement"] = hand_placement(predictions, ground_truths, hands)
    return out


def prediction_spread(predictions: torch.Tensor, ground_truths: torch.Tensor) -> float:
    """How far the predictions move with the figure: the standard deviation over the N images of each predicted
    coordinate, over that of the ground truth, averaged over keypoints and axes (``Tensor[N, K, 2]`` each).

    1 when the predictions move as much as the keypoints do; 0 for the same pose in every image, which is what a
    model that cannot see where the figure is converges to (the mean pose). NaN for fewer than 2 images.
    """
    if len(ground_truths) < 2:
        return float("nan")
    return float((predictions.double().std(dim=0) / ground_truths.double().std(dim=0).clamp_min(1e-9)).mean())


# --- where hand predictions land ----------------------------------------------------------------------------------

def hand_placement(predictions: torch.Tensor, ground_truths: torch.Tensor, hands: tuple[int, int],
                   near: float = HAND_NEAR, apart: float = HAND_APART) -> dict:
    """Where a method puts its two hand predictions when the two hands are apart.

    The image does not say which hand carries which label, so a method either commits to one assignment or,
    if it estimates the posterior mean (MSE, or the expectation of a two-peaked map), lands between the hands;
    a method that decodes x and y apart (SimCC) can also take the x of one hand and the y of the other.
    With ``r = near x`` the keypoint box diagonal (the PCK radius at ``near``), the images whose hands are more
    than ``apart x r`` apart are kept (there the midpoint is farther than ``r`` from both hands); each of their
    hand predictions is assigned to the nearest of hand A, hand B, the hands' midpoint and the two crossed points
    ``(x_A, y_B)``, ``(x_B, y_A)``, and counts as near it within ``r`` (a crossed point on a hand, when the hands
    differ in one coordinate only, counts as that hand).

    Args:
        predictions (Tensor[N, K, 2]), ground_truths (Tensor[N, K, 2]): image pixels; hands: the two hand indices.
    Returns:
        ``{'near', 'apart', 'images_apart', 'fraction_apart'}`` and, as fractions over those images:
        ``'near_one_hand'``, ``'near_midpoint'``, ``'crossed'``, ``'elsewhere'`` (of the hand predictions; they
        sum to 1),
        ``'one_per_hand'`` (of the images: the two predictions near different hands) and ``'hand_pck'`` (of the
        hand predictions: within ``r`` of their own label, i.e. PCK at ``near``). NaN where no image qualifies.
    """
    gt, pred = ground_truths.double(), predictions.double()
    r = near * reference_length(gt)  # [N]
    h = gt[:, list(hands)]  # [N, 2, 2]: the two hands
    kept = (h[:, 0] - h[:, 1]).norm(dim=-1) > apart * r  # [N]
    crossed = torch.stack([h[:, 0, 0], h[:, 1, 1], h[:, 1, 0], h[:, 0, 1]], dim=-1).view(-1, 2, 2)  # [N, 2, 2]
    # [N, 5, 2]: hand A, hand B, midpoint, (x_A, y_B), (x_B, y_A); argmin takes the first of tied anchors
    anchors = torch.cat([h, h.mean(dim=1, keepdim=True), crossed], dim=1)
    p = pred[:, list(hands)]  # [N, 2, 2]: the two hand predictions
    dist = (p[:, :, None] - anchors[:, None]).norm(dim=-1)  # [N, 2, 5]
    nearest, close = dist.argmin(dim=-1), dist.amin(dim=-1) <= r[:, None]  # [N, 2]
    on_hand, on_mid, on_crossed = close & (nearest < 2), close & (nearest == 2), close & (nearest > 2)
    one_per_hand = on_hand.all(dim=1) & (nearest[:, 0] != nearest[:, 1])  # [N]
    correct = (p - h).norm(dim=-1) <= r[:, None]  # [N, 2]
    n = int(kept.sum())
    frac = lambda m: float(m[kept].double().mean()) if n else float("nan")  # noqa: E731
    return {"near": near, "apart": apart, "images_apart": n, "fraction_apart": n / max(len(gt), 1),
            "near_one_hand": frac(on_hand), "near_midpoint": frac(on_mid), "crossed": frac(on_crossed),
            "elsewhere": frac(~close),
            "one_per_hand": frac(one_per_hand), "hand_pck": frac(correct)}


def hand_placement_strategies(ground_truths: torch.Tensor, hands: tuple[int, int]) -> dict[str, dict]:
    """:func:`hand_placement` of the ceiling's two strategies: ``'commit'`` (one prediction on each hand, the
    labels right half of the time: its ``hand_pck`` is the mean over the two assignments) and ``'midpoint'``
    (both predictions at the hands' midpoint)."""
    a, b = hands
    swapped, mid = ground_truths.clone(), ground_truths.clone()
    swapped[:, [a, b]] = ground_truths[:, [b, a]]
    mid[:, [a, b]] = ground_truths[:, [a, b]].mean(dim=1, keepdim=True)
    right, wrong = hand_placement(ground_truths, ground_truths, hands), hand_placement(swapped, ground_truths, hands)
    return {"commit": {**right, "hand_pck": 0.5 * (right["hand_pck"] + wrong["hand_pck"])},
            "midpoint": hand_placement(mid, ground_truths, hands)}


# --- the hand-ambiguity ceiling ----------------------------------------------------------------------------------

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
    r = t * reference_length(gt, normalize_by, torso)[None]  # [T, N]
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
    r = t[None] * reference_length(gt)[:, None]  # [N, T]
    d = (gt[:, hands[0]] - gt[:, hands[1]]).norm(dim=-1)[:, None]  # [N, 1]
    a = torch.cat([torch.zeros_like(d), d / 2, (d - r).clamp(min=0).minimum(d / 2)], dim=1)  # [N, A] candidates
    credit = 0.5 * (a[..., None] <= r[:, None]).double() + 0.5 * ((d - a)[..., None] <= r[:, None]).double()
    best = credit.sum(dim=-1).amax(dim=1)  # [N, A, T] -> [N]
    return float(((k - 2) * len(t) + 2 * best).mean() / k)


def ceiling_metrics(ground_truths: torch.Tensor, hands: tuple[int, int]) -> dict:
    """The Bayes ceiling (``pck``, ``auc``, ``curve``), its two strategies alone (with where they put the hands,
    :func:`hand_placement_strategies`), and the single-prediction bound."""
    out = {}
    for strategy in STRATEGIES:
        curve = hand_ambiguity_ceiling(ground_truths, DENSE_THRESHOLDS, hands, strategy=strategy)
        out[strategy] = {"pck": by_threshold(hand_ambiguity_ceiling(ground_truths, THRESHOLDS, hands,
                                                                    strategy=strategy)),
                         "auc": auc(DENSE_THRESHOLDS, list(curve.values())), "curve": list(curve.values())}
    for strategy, placement in hand_placement_strategies(ground_truths, hands).items():
        out[strategy]["hand_placement"] = placement
    bayes = out.pop("bayes")
    return {**bayes, "strategies": out, "sum_over_thresholds": sum(bayes["pck"].values()),
            "best_single_prediction_sum": best_single_prediction_sum(ground_truths, THRESHOLDS, hands)}


# --- failure analysis --------------------------------------------------------------------------------------------

def failure_groups(pred_heatmap: torch.Tensor, pred_regression: torch.Tensor, gt: torch.Tensor,
                   names: Sequence[str], threshold: float = FAILURE_THRESHOLD) -> dict:
    """Keypoints (N x K instances) at PCK@threshold: heatmap right & regression wrong, the reverse, both wrong.

    Per group ``{'count', 'images' (with at least one), 'per_keypoint', 'mask' Bool[N, K]}``; the mask is for
    figures and stays out of ``metrics.json``.
    """
    ok_h = pck_correct(pred_heatmap, gt, [threshold])[0]  # [N, K]
    ok_r = pck_correct(pred_regression, gt, [threshold])[0]
    groups = {"heatmap_right_regression_wrong": ok_h & ~ok_r, "regression_right_heatmap_wrong": ~ok_h & ok_r,
              "both_wrong": ~ok_h & ~ok_r}
    return {g: {"count": int(m.sum()), "images": int(m.any(dim=1).sum()),
                "per_keypoint": {n: int(m[:, j].sum()) for j, n in enumerate(names)}, "mask": m}
            for g, m in groups.items()}
