"""Problem 1 metrics: AP toy cases with known answers, agreement with pycocotools, decoding and NMS."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from problem1.analysis import false_positive_analysis
from problem1.config import FEATURE_MAP_SIZES
from problem1.evaluate import compute_ap, decode_predictions
from problem1.metrics import ap_50_95, ap_hidden_ignored, best_f1, confusion_matrix, evaluate_detections
from problem1.utils import anchor_scale_index, default_anchor_list, default_anchors


def _gt(boxes, labels, ignore=None):
    d = {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}
    if ignore is not None:
        d["ignore"] = np.asarray(ignore, dtype=bool)
    return d


def _pred(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "scores": np.asarray(scores, np.float64),
            "labels": np.asarray(labels, dtype=np.int64)}


A, B, C = [10, 10, 50, 50], [100, 100, 160, 160], [20, 120, 60, 200]


def test_perfect_detections_give_one():
    gts = [_gt([A, B], [0, 1]), _gt([C], [2])]
    preds = [_pred([A, B], [0.9, 0.8], [0, 1]), _pred([C], [0.7], [2])]
    res = compute_ap(preds, gts)
    # tp / (tp + fp + eps) as in pycocotools: 1 up to one ulp
    assert res["ap_per_class"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


def test_all_wrong_give_zero():
    gts = [_gt([A, B], [0, 1])]
    wrong_place = [_pred([[200, 200, 220, 220], [0, 0, 5, 5]], [0.9, 0.8], [0, 1])]
    assert compute_ap(wrong_place, gts) == {"ap_per_class": [0.0, 0.0, pytest.approx(math.nan, nan_ok=True)],
                                            "mAP": 0.0}
    wrong_class = [_pred([A, B], [0.9, 0.8], [1, 0])]
    assert compute_ap(wrong_class, gts)["mAP"] == 0.0


def test_duplicate_is_a_false_positive():
    # two objects; the first is found twice (0.9, 0.8) before the second (0.7): TP, FP, TP
    gts = [_gt([A, B], [0, 0])]
    preds = [_pred([A, [11, 10, 50, 51], B], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap = compute_ap(preds, gts)["ap_per_class"][0]
    # precision envelope 1 up to recall 0.5 (51 of 101 points), 2/3 above it (50 points)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-12)
    # a duplicate ranked last cannot lower AP; IoU 0.5 is a hit, just below it a miss
    assert compute_ap([_pred([A, A], [0.9, 0.1], [0, 0])], [_gt([A], [0])])["mAP"] == pytest.approx(1.0)
    assert compute_ap([_pred([[10, 10, 50, 30]], [0.9], [0])], [_gt([A], [0])])["mAP"] == pytest.approx(1.0)  # 0.5
    assert compute_ap([_pred([[10, 10, 50, 29]], [0.9], [0])], [_gt([A], [0])])["mAP"] == 0.0  # IoU 0.475


def test_low_scores_still_count_and_no_11_point():
    # one object found only at a very low score, after one false positive: precision 1/2 at recall 1
    gts = [_gt([A], [0])]
    preds = [_pred([B, A], [0.9, 0.02], [0, 0])]
    assert compute_ap(preds, gts)["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_ignored_ground_truth():
    # B is hidden: a detection on it is no FP, and leaving it unfound is no miss
    gts = [_gt([A, B], [0, 0], ignore=[False, True])]
    assert compute_ap([_pred([B, A], [0.9, 0.8], [0, 0])], gts)["mAP"] == pytest.approx(1.0)
    assert compute_ap([_pred([A], [0.8], [0])], gts)["mAP"] == pytest.approx(1.0)
    # without the ignore flag the same detections give less
    assert compute_ap([_pred([A], [0.8], [0])], [_gt([A, B], [0, 0])])["mAP"] < 0.6


# ------------------------------------------------------------------------------------------ pycocotools
def _coco_ap(preds, gts, num_classes):
    """pycocotools AP@0.5 (area all, maxDets 100) per class; hidden objects ignored via an out-of-range area."""
    pytest.importorskip("pycocotools")  # only the comparisons need it; every other test here runs without it
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns = [], []
    for i, g in enumerate(gts):
        images.append({"id": i + 1, "width": 224, "height": 224})
        ign = g.get("ignore", np.zeros(len(g["labels"]), bool))
        for box, lab, ig in zip(g["boxes"], g["labels"], ign, strict=True):
            x1, y1, x2, y2 = box.tolist()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1],  # COCO boxes are [x, y, w, h]
                         "area": 1e11 if ig else (x2 - x1) * (y2 - y1), "iscrowd": 0})
    dets = [{"image_id": i + 1, "category_id": int(lab) + 1, "score": float(s),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for i, p in enumerate(preds) for b, s, lab in zip(p["boxes"].tolist(), p["scores"], p["labels"],
                                                              strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][0, :, :, 0, 2]  # IoU 0.5, all recall points, classes, area all, maxDets 100
    per_class = [float(np.mean(prec[:, k])) if (prec[:, k] > -1).all() else math.nan for k in range(num_classes)]
    return per_class, float(ev.stats[1])


def _random_case(rng: np.random.Generator, n_images: int, with_ignore: bool, jitter: float = 4.0):
    gts, preds = [], []
    for i in range(n_images):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 170, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 60, (n, 2))], 1)
        labels = rng.integers(0, 3, n)
        ignore = rng.random(n) < 0.2 if with_ignore else None
        gts.append(_gt(boxes, labels, ignore))
        pb, ps, pl = [], [], []
        for box, lab in zip(boxes, labels, strict=True):
            for _ in range(int(rng.integers(0, 4))):  # misses, hits and duplicates, some of another class
                pb.append(box + rng.normal(0, jitter, 4))
                ps.append(rng.random())
                pl.append(lab if rng.random() < 0.8 else rng.integers(0, 3))
        n_fp = 130 if i == 0 else int(rng.integers(0, 6))  # image 0 exceeds maxDets=100 for some class
        xy = rng.uniform(0, 170, (n_fp, 2))
        pb += list(np.concatenate([xy, xy + rng.uniform(8, 60, (n_fp, 2))], 1))
        ps += list(rng.random(n_fp))
        pl += list(rng.integers(0, 3, n_fp) if i else np.zeros(n_fp, np.int64))
        pb = np.asarray(pb).reshape(-1, 4)
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        preds.append(_pred(pb, ps, pl))
    return preds, gts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_ignore", [False, True])
def test_matches_pycocotools(seed, with_ignore):
    rng = np.random.default_rng(seed)
    # noisy boxes (many IoUs near 0.5) for seeds 0-2, tight ones for 3-5; random-score FPs in both
    preds, gts = _random_case(rng, n_images=25, with_ignore=with_ignore, jitter=4.0 if seed < 3 else 1.0)
    ours = compute_ap(preds, gts)
    theirs, theirs_map = _coco_ap(preds, gts, 3)
    np.testing.assert_allclose(ours["ap_per_class"], theirs, rtol=0, atol=1e-6)
    assert ours["mAP"] == pytest.approx(theirs_map, abs=1e-6)


def test_class_without_ground_truth_is_left_out_like_pycocotools():
    rng = np.random.default_rng(7)
    preds, gts = _random_case(rng, n_images=10, with_ignore=False)
    gts = [{**g, "labels": np.where(g["labels"] == 2, 1, g["labels"])} for g in gts]  # no class-2 objects
    ours = compute_ap(preds, gts)
    theirs, theirs_map = _coco_ap(preds, gts, 3)
    assert math.isnan(ours["ap_per_class"][2]) and math.isnan(theirs[2])
    assert ours["mAP"] == pytest.approx(theirs_map, abs=1e-6)


def test_hidden_ignored_ap_known_answer():
    # B is hidden (visibility 0.05 < 0.1) and found only after a false positive; A is found first.
    gts = [{**_gt([A, B], [0, 0]), "visibility": np.array([1.0, 0.05])}]
    preds = [_pred([A, C, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    hidden = ap_hidden_ignored(preds, gts, 3)
    # ignoring B: A is a TP at precision 1 -> AP 1 (the detection on B counts as neither TP nor FP)
    assert hidden["num_hidden"] == 1 and hidden["ap_per_class"][0] == pytest.approx(1.0)
    # all counted: TP, FP, TP -> precision 1 up to recall 0.5, then 2/3
    assert compute_ap(preds, gts)["ap_per_class"][0] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    # the threshold is strict: visibility exactly 0.1 is not hidden
    assert ap_hidden_ignored(preds, [{**gts[0], "visibility": np.array([1.0, 0.1])}], 3)["num_hidden"] == 0


def test_ap_50_95_known_answer():
    # One object, one detection with IoU exactly 0.8 (x2 shortened: 32/40): a hit at 0.50..0.80 (7 thresholds),
    # a miss at 0.85..0.95 (3) -> AP@[.5:.95] = 7/10; the class without objects stays nan and out of the mean.
    gts = [_gt([A], [0])]
    preds = [_pred([[10, 10, 42, 50]], [0.9], [0])]
    res = ap_50_95(preds, gts, 3)
    assert res["ap_per_class"][0] == pytest.approx(0.7, abs=1e-12)
    assert math.isnan(res["ap_per_class"][1]) and res["mAP"] == pytest.approx(0.7, abs=1e-12)


def test_torch_inputs_and_best_f1_and_confusion():
    gts = [{"boxes": torch.tensor([A, B], dtype=torch.float32), "labels": torch.tensor([0, 1])}]
    preds = [{"boxes": torch.tensor([A, B, C], dtype=torch.float32), "scores": torch.tensor([0.9, 0.8, 0.6]),
              "labels": torch.tensor([0, 0, 2])}]
    assert compute_ap(preds, gts)["ap_per_class"][:2] == pytest.approx([1.0, 0.0])
    curves, _ = evaluate_detections(preds, gts, 3)
    f = best_f1(curves[0])
    assert (f["precision"], f["recall"], f["score_threshold"]) == pytest.approx((1.0, 1.0, 0.9))
    cm = confusion_matrix(preds, gts, 3, score_threshold=0.5)
    # A found as circle; B (a square) found as circle; C predicted where nothing is (background row)
    assert cm[0, 0] == 1 and cm[1, 0] == 1 and cm[3, 2] == 1 and cm.sum() == 3


# ------------------------------------------------------------------------------------------- decoding
def _outputs_with(cells: list[tuple[int, int, int, int, int, float]]):
    """Head outputs, all background, with (scale, i, j, a, class, objectness logit) cells switched on."""
    outs = [torch.zeros(1, 24, h, w) for h, w in FEATURE_MAP_SIZES]
    for o in outs:
        o.view(1, 3, 8, *o.shape[2:])[:, :, 4] = -20.0
    for s, i, j, a, c, logit in cells:
        v = outs[s].view(1, 3, 8, *outs[s].shape[2:])
        v[0, a, 4, i, j] = logit
        v[0, a, 5 + c, i, j] = 10.0
    return outs


def test_decode_offsets_zero_gives_anchor_and_nms():
    anchors = default_anchors()
    # scale 2, cell (10, 10), anchor 1 (64 px): one detection exactly on its anchor
    outs = _outputs_with([(1, 10, 10, 1, 2, 5.0), (1, 10, 11, 1, 2, 4.0), (1, 10, 11, 0, 0, 4.0)])
    dets = decode_predictions(outs, anchors, scale_index=anchor_scale_index(default_anchor_list()))[0]
    k = 56 * 56 * 3 + (10 * 28 + 10) * 3 + 1
    torch.testing.assert_close(dets["boxes"][0], anchors[k])
    assert dets["labels"][0] == 2 and dets["scales"][0] == 1
    # the neighbour of the same class (IoU 0.78) is suppressed; the overlapping one of another class is kept
    assert sorted(dets["labels"][dets["scores"] > 0.5].tolist()) == [0, 2]
    assert torch.all(dets["scores"][:-1] >= dets["scores"][1:])


def test_batched_nms_never_suppresses_across_images():
    # Two images with identical head outputs: identical boxes, but in different images they must not suppress
    # each other, so each image keeps exactly what it keeps when decoded alone.
    anchors = default_anchors()
    outs = _outputs_with([(1, 10, 10, 1, 2, 5.0), (1, 10, 11, 1, 2, 4.0), (2, 3, 3, 0, 0, 3.0)])
    alone = decode_predictions(outs, anchors)[0]
    assert len(alone["scores"]) == 2  # the same-class neighbour is suppressed within the image
    pair = decode_predictions([torch.cat([o, o]) for o in outs], anchors)
    assert len(pair) == 2
    for dets in pair:
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(dets[k], alone[k])


def test_decode_threshold_and_cap():
    anchors = default_anchors()
    outs = _outputs_with([(2, i, j, 0, 0, 3.0) for i in range(0, 14, 3) for j in range(0, 14, 3)])  # 25, IoU <= 1/3
    assert len(decode_predictions(outs, anchors, max_detections=10)[0]["scores"]) == 10
    assert len(decode_predictions(outs, anchors)[0]["scores"]) == 25
    assert len(decode_predictions(outs, anchors, score_threshold=0.99)[0]["scores"]) == 0


def test_false_positive_analysis_known_kinds():
    from types import SimpleNamespace

    target = {"boxes": torch.tensor([[50.0, 50, 114, 114], [150, 150, 180, 180]]), "labels": torch.tensor([1, 0])}
    boxes = torch.tensor([
        [50.0, 50, 114, 114],  # true positive (scale 2)
        [52, 52, 116, 116],  # duplicate of it (scale 2)
        [70, 70, 134, 134],  # mislocalised: IoU 44^2 / (2 * 64^2 - 44^2) = 0.31, centre 20 px = 0.3125 widths off
        [150, 150, 180, 180],  # exactly on the circle, but called a square: wrong class (scale 1)
        [0, 0, 20, 20],  # background (scale 1)
        [0, 100, 20, 120],  # background, but below the score floor: not counted
    ])
    pred = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.55, 0.2]),
            "labels": torch.full((6,), 1), "scales": torch.tensor([1, 1, 2, 0, 0, 0])}
    _, matches = evaluate_detections([pred], [target], 3)
    f = false_positive_analysis([pred], matches, SimpleNamespace(targets=[target]), min_score=0.5)
    sq = f["per_class"]["square"]
    assert sq["total"] == 4
    assert sq["by_kind"] == {"duplicate": 1, "mislocalised": 1, "wrong class": 1, "background": 1}
    assert sq["by_scale"] == {"scale1": 2, "scale2": 1, "scale3": 1}
    assert sq["mislocalised_by_scale"] == {"scale1": 0, "scale2": 0, "scale3": 1}
    assert sq["mislocalised_median_centre_offset"] == pytest.approx(20 / 64)
    assert sq["mislocalised_median_width_ratio"] == pytest.approx(1.0)
    assert f["per_class"]["circle"]["total"] == 0
