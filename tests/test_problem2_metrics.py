"""Problem 2 metrics: PCK toy cases, AUC, swap invariance and the hand-ambiguity ceiling (toy and reference data)."""
from __future__ import annotations

import json

import pytest
import torch

from common.synthetic import generate
from problem2.metrics import (
    auc,
    best_single_prediction_sum,
    compute_pck,
    hand_ambiguity_ceiling,
    keypoint_metrics,
    pck_correct,
    reference_length,
    swap_hands_to_best,
)

NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]


def figure(cx: float = 60.0, cy: float = 60.0) -> torch.Tensor:
    """A 5-keypoint figure whose keypoint box is 40 x 30 px (diagonal 50)."""
    return torch.tensor([[cx, cy - 10], [cx - 20, cy], [cx + 20, cy], [cx - 10, cy + 20], [cx + 10, cy + 20]])


def test_reference_lengths():
    gt = figure()[None]
    assert reference_length(gt, "bbox").item() == pytest.approx(50.0)
    assert reference_length(gt, "torso").item() == pytest.approx(30.0)  # head (60, 50) to feet midpoint (60, 80)
    with pytest.raises(ValueError):
        reference_length(gt, "nose")


def test_pck_toy_known_answers():
    gt = torch.stack([figure(), figure(40, 70)])  # [2, 5, 2], diagonal 50 in both
    pred = gt.clone()
    pred[0, 0, 0] += 2.5  # error 2.5 px = 0.05 x 50: correct at 0.05 (inclusive)
    pred[0, 1, 1] += 4.0  # 0.08: wrong at 0.05, right at 0.1
    pred[1, 2] += torch.tensor([6.0, 8.0])  # 10 px = 0.2: right only at 0.2
    pred[1, 3, 0] += 100.0  # never right
    pck = compute_pck(pred, gt, [0.0, 0.05, 0.1, 0.15, 0.2])
    assert pck == {0.0: 0.6, 0.05: 0.7, 0.1: 0.8, 0.15: 0.8, 0.2: 0.9}
    # torso (30 px): 2.5 px -> 0.083, 4 px -> 0.133, 10 px -> 0.333
    assert compute_pck(pred, gt, [0.05, 0.1, 0.15], "torso") == {0.05: 0.6, 0.1: 0.7, 0.15: 0.8}
    assert pck_correct(pred, gt, [0.1]).shape == (1, 2, 5)
    # Perfect predictions score 1 everywhere; NaN predictions count as wrong.
    assert set(compute_pck(gt, gt, [0.0, 0.5]).values()) == {1.0}
    assert compute_pck(torch.full_like(gt, float("nan")), gt, [0.5]) == {0.5: 0.0}


def test_auc():
    assert auc([0.0, 0.25, 0.5], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert auc([0.0, 0.5], [0.0, 1.0]) == pytest.approx(0.5)


def test_swap_invariant_scoring():
    gt = figure()[None]
    pred = gt.clone()
    pred[0, [1, 2]] = gt[0, [2, 1]]  # hands exactly swapped
    assert compute_pck(pred, gt, [0.1])[0.1] == pytest.approx(0.6)
    fixed = swap_hands_to_best(pred, gt, (1, 2))
    assert torch.equal(fixed, gt)
    m = keypoint_metrics(pred, gt, NAMES, (1, 2))
    assert m["pck"]["0.1"] == pytest.approx(0.6) and m["swap_invariant"]["pck"]["0.1"] == 1.0
    assert m["swap_invariant"]["mean_px_error"] == 0.0 and len(m["curve"]) == 101
    assert set(m["per_keypoint"]) == set(NAMES) and "pck_torso" in m


def test_ceiling_toy_case():
    # Diagonal 50 px; hands 40 px apart (d). Threshold radius r = 50 t.
    gt = figure()[None]
    c = hand_ambiguity_ceiling(gt, [0.1, 0.3, 0.4, 0.8])
    # r = 5: d > 2r, each hand gets 1/2 (commit) -> (3 + 1) / 5.  r = 15: still d > 2r = 30 -> 0.8.
    # r = 20: d = 2r, the midpoint is within r of both hands -> 1.   r = 40: d <= r, any strategy -> 1.
    assert c == {0.1: pytest.approx(0.8), 0.3: pytest.approx(0.8), 0.4: 1.0, 0.8: 1.0}
    # Two images: one with the hands on top of each other (ceiling 1), one as above.
    gt2 = torch.stack([figure(), figure()])
    gt2[0, 2] = gt2[0, 1]
    assert hand_ambiguity_ceiling(gt2, [0.1])[0.1] == pytest.approx(0.9)
    # It is the better of "commit to one assignment" and "predict the midpoint for both", per image.
    commit = gt.clone()
    midpoint = gt.clone()
    midpoint[0, [1, 2]] = gt[0, [1, 2]].mean(dim=0)
    swapped = gt.clone()
    swapped[0, [1, 2]] = gt[0, [2, 1]]
    for t in (0.1, 0.4, 0.8):
        commit_exp = 0.5 * (compute_pck(commit, gt, [t])[t] + compute_pck(swapped, gt, [t])[t])
        mid_exp = compute_pck(midpoint, gt, [t])[t]
        assert c[t] == pytest.approx(max(commit_exp, mid_exp))


def test_ceiling_strategies_and_single_prediction_bound():
    gt = figure()[None]  # hands 40 px apart, diagonal 50: r = 5, 15, 20, 40
    ts = [0.1, 0.3, 0.4, 0.8]
    commit = hand_ambiguity_ceiling(gt, ts, strategy="commit")
    midpoint = hand_ambiguity_ceiling(gt, ts, strategy="midpoint")
    assert list(commit.values()) == pytest.approx([0.8, 0.8, 0.8, 1.0])
    assert list(midpoint.values()) == pytest.approx([0.6, 0.6, 1.0, 1.0])
    # One prediction for all four thresholds: committing earns 0.5+0.5+0.5+1 per hand, the midpoint 0+0+1+1,
    # so the best sum is (3 * 4 + 2 * 2.5) / 5 = 3.4, below the per-threshold ceiling's 0.8+0.8+1+1 = 3.6.
    assert best_single_prediction_sum(gt, ts) == pytest.approx(3.4)
    assert sum(hand_ambiguity_ceiling(gt, ts).values()) == pytest.approx(3.6)


@pytest.fixture(scope="session")
def reference_val(tmp_path_factory) -> torch.Tensor:
    out = tmp_path_factory.mktemp("reference_kp")
    generate(out, only="keypoints")  # the reference data, keypoints only (about 1 s)
    doc = json.loads((out / "keypoints" / "val_annotations.json").read_text())
    return torch.tensor([im["keypoints"] for im in doc["images"]], dtype=torch.float64)


def test_ceiling_on_reference_validation_set(reference_val):
    assert reference_val.shape == (200, 5, 2)
    c = hand_ambiguity_ceiling(reference_val, [0.05, 0.1, 0.15, 0.2])
    assert [round(v, 3) for v in c.values()] == [0.859, 0.914, 0.965, 0.987]
    # No single set of predictions reaches it at all four thresholds: 3.606 < 3.725 (sum over thresholds).
    assert best_single_prediction_sum(reference_val, [0.05, 0.1, 0.15, 0.2]) == pytest.approx(3.606)
