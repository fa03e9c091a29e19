"""Problem 1 box math: IoU, anchors and their order, matching edge cases, encode/decode."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from problem1.config import ANCHOR_SCALES, FEATURE_MAP_SIZES
from problem1.model import MultiScaleDetector
from problem1.utils import (
    compute_iou,
    decode_boxes,
    default_anchors,
    encode_boxes,
    flatten_field,
    flatten_predictions,
    gather_predictions,
    generate_anchors,
    match_anchors_batched,
    match_anchors_to_targets,
    pad_targets,
)


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [10, 10, 20, 20], [0, 0, 2, 8]])
    iou = compute_iou(a, b)
    expected = torch.tensor([
        [1.0, 25 / 175, 0.0, 16 / 100],  # identical; quarter overlap; corner touch; contained strip
        [16 / 100, 0.0, 0.0, 8 / 24],  # contained; disjoint; disjoint; 2x4 overlap of 16 and 16
    ])
    assert iou.shape == (2, 4)
    torch.testing.assert_close(iou, expected)
    torch.testing.assert_close(iou, tv_box_iou(a, b))


def test_iou_batched_broadcast_matches_per_image():
    torch.manual_seed(0)
    xy = torch.rand(3, 5, 2) * 100
    boxes = torch.cat([xy, xy + torch.rand(3, 5, 2) * 50 + 1], -1)
    anchors = torch.cat(generate_anchors([4], [[16, 32]], 64))
    from problem1.utils import box_iou

    batched = box_iou(boxes, anchors)  # [3, 5, A]
    for i in range(3):
        torch.testing.assert_close(batched[i], tv_box_iou(boxes[i], anchors))


def test_anchor_count_positions_and_sizes():
    anchors = generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES, 224)
    assert [len(a) for a in anchors] == [56 * 56 * 3, 28 * 28 * 3, 14 * 14 * 3]
    assert sum(len(a) for a in anchors) == 12348
    # scale 1: row 0, column 0, the 16/24/32 anchors centred on (2, 2) (stride 4)
    torch.testing.assert_close(anchors[0][:3], torch.tensor([[-6.0, -6, 10, 10], [-10, -10, 14, 14],
                                                             [-14, -14, 18, 18]]))
    # order is row i, column j, anchor a: index (i*W + j)*A + a
    i, j, a, stride = 5, 7, 1, 8
    box = anchors[1][(i * 28 + j) * 3 + a]
    cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
    torch.testing.assert_close(box, torch.tensor([cx - 32, cy - 32, cx + 32, cy + 32]))
    # plain ints and (H, W) pairs mean the same; a non-square map uses separate strides
    assert torch.equal(generate_anchors([14], [[96]])[0], generate_anchors([(14, 14)], [[96]])[0])
    rect = generate_anchors([(2, 4)], [[10]], 8)[0]
    torch.testing.assert_close(rect[1], torch.tensor([3.0 - 5, 2 - 5, 3 + 5, 2 + 5]))  # i=0, j=1: stride x 2, y 4


def test_default_anchors_are_the_specified_set_in_anchor_order():
    anchors = default_anchors()
    assert anchors.shape == (12348, 4)
    # scale 2 (stride 8) starts after the 56*56*3 anchors of scale 1; cell (10, 10), anchor 1 (64 px) is centred
    # on (84, 84)
    torch.testing.assert_close(anchors[56 * 56 * 3 + (10 * 28 + 10) * 3 + 1], torch.tensor([52.0, 52, 116, 116]))
    # the very last anchor: scale 3 (stride 16), cell (13, 13), the 192 px one centred on (216, 216)
    torch.testing.assert_close(anchors[-1], torch.tensor([120.0, 120, 312, 312]))


def test_anchor_order_matches_head_flattening():
    """Each flattened prediction row must sit at its anchor: mark head channels by position, compare."""
    model = MultiScaleDetector()
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 56, 56), (1, 24, 28, 28), (1, 24, 14, 14)]
    anchors = default_anchors()
    # Fill each head output so that anchor a at (i, j) of scale s carries (cx, cy, size) of where it is.
    marked = []
    for (h, w), scales in zip(FEATURE_MAP_SIZES, ANCHOR_SCALES, strict=True):
        stride = 224 / w
        x = torch.zeros(1, 3, 8, h, w)  # [B, A, 5+C, H, W]
        x[0, :, 0] = ((torch.arange(w) + 0.5) * stride)[None, None, :]
        x[0, :, 1] = ((torch.arange(h) + 0.5) * stride)[None, :, None]
        x[0, :, 2] = torch.tensor(scales, dtype=torch.float32)[:, None, None]
        marked.append(x.reshape(1, 24, h, w))
    flat = flatten_predictions(marked, 3)[0]  # [12348, 8]
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(flat[:, :2], centre)
    torch.testing.assert_close(flat[:, 2], anchors[:, 2] - anchors[:, 0])
    # the partial flatteners used by the loss agree with the full one
    torch.testing.assert_close(flatten_field(marked, 3, 1), flatten_predictions(marked, 3)[..., 1])
    rows = torch.tensor([0, 5, 9408, 12347, 9407, 11760])
    torch.testing.assert_close(gather_predictions(marked, torch.zeros(6, dtype=torch.long), rows, 3), flat[rows])


def test_encode_decode_round_trip():
    torch.manual_seed(0)
    anchors = default_anchors().double()
    xy = torch.rand(len(anchors), 2, dtype=torch.float64) * 200
    boxes = torch.cat([xy, xy + torch.rand(len(anchors), 2, dtype=torch.float64) * 150 + 1], -1)
    offsets = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(offsets, anchors), boxes, rtol=0, atol=1e-9)
    # the box equal to its anchor encodes to zero; a box shifted by 0.1 anchor widths to tx = 1 (variance 0.1)
    a = torch.tensor([[10.0, 20, 30, 60]])
    torch.testing.assert_close(encode_boxes(a, a), torch.zeros(1, 4))
    torch.testing.assert_close(encode_boxes(a + torch.tensor([2.0, 0, 2, 0]), a), torch.tensor([[1.0, 0, 0, 0]]))
    # float32, the training dtype, is still within rounding
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes.float(), anchors.float()), anchors.float()),
                               boxes.float(), rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------- matching
def test_match_exact_and_thresholds():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 40], [0, 0, 10, 30], [50, 50, 60, 60]])
    gt = torch.tensor([[0.0, 0, 10, 20]])
    # IoU with gt: 0.5, 1.0, 0.5, 2/3, 0
    labels, boxes, pos, neg = match_anchors_to_targets(anchors, gt, torch.tensor([2]), force_match=False)
    assert pos.tolist() == [True, True, True, True, False]  # >= 0.5 is positive, boundary included
    assert neg.tolist() == [False, False, False, False, True]
    assert labels.tolist() == [3, 3, 3, 3, 0]  # class id + 1, background 0
    assert torch.equal(boxes[1], gt[0]) and torch.equal(boxes[4], torch.zeros(4))
    # neg threshold boundary: IoU exactly 0.3 is negative; 0.4 is in the ignore band
    anchors = torch.tensor([[0.0, 0, 10, 3], [0, 0, 10, 4], [0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    labels, _, pos, neg = match_anchors_to_targets(anchors, gt, torch.tensor([0]), force_match=False)
    assert pos.tolist() == [False, False, True]
    assert neg.tolist() == [True, False, False]  # 0.3 negative, 0.4 ignored (neither)
    assert labels.tolist() == [0, 0, 1]


def test_match_forced_best_anchor():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 4], [40, 40, 50, 50]])
    gt = torch.tensor([[0.0, 0, 10, 25]])  # best IoU 0.4 (anchor 0): below 0.5
    _, _, pos, neg = match_anchors_to_targets(anchors, gt, torch.tensor([1]), force_match=False)
    assert not pos.any() and neg.tolist() == [False, True, True]
    labels, boxes, pos, neg = match_anchors_to_targets(anchors, gt, torch.tensor([1]))  # force_match default on
    assert pos.tolist() == [True, False, False] and not neg[0]
    assert labels.tolist() == [2, 0, 0] and torch.equal(boxes[0], gt[0])


def test_match_two_objects_best_iou_and_forced_conflict():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    gt = torch.tensor([[0.0, 0, 10, 11], [19, 0, 30, 10], [0, 0, 10, 30]])
    labels, boxes, pos, _ = match_anchors_to_targets(anchors, gt, torch.tensor([0, 1, 2]))
    # anchor 0 is the best anchor of gt 0 (IoU 10/11) and gt 2 (1/3): it keeps gt 0, the higher IoU
    assert pos.tolist() == [True, True] and labels.tolist() == [1, 2]
    assert torch.equal(boxes[0], gt[0]) and torch.equal(boxes[1], gt[1])


def test_match_empty_image_all_negative():
    anchors = default_anchors()
    labels, boxes, pos, neg = match_anchors_to_targets(anchors, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert labels.shape == (12348,) and boxes.shape == (12348, 4)
    assert not pos.any() and neg.all() and not labels.any()


def test_batched_matching_equals_per_image():
    torch.manual_seed(1)
    anchors = default_anchors()
    targets = []
    for n in (3, 0, 5, 1):
        xy = torch.rand(n, 2) * 150
        targets.append({"boxes": torch.cat([xy, xy + torch.rand(n, 2) * 70 + 10], -1),
                        "labels": torch.randint(0, 3, (n,))})
    boxes, labels = pad_targets(targets)
    assert boxes.shape == (4, 5, 4) and (labels[1] == -1).all()
    idx, pos, neg = match_anchors_batched(anchors, boxes, labels)
    for i, t in enumerate(targets):
        lab, box, p, n = match_anchors_to_targets(anchors, t["boxes"], t["labels"])
        assert torch.equal(p, pos[i]) and torch.equal(n, neg[i])
        if len(t["labels"]):
            assert torch.equal(lab[p], t["labels"][idx[i][p]] + 1)
        # every object has at least one positive anchor with the forced match on
        assert len(set(idx[i][pos[i]].tolist())) == len(t["labels"])


@pytest.mark.parametrize("force", [True, False])
def test_first_argmax_ties_pick_first(force):
    """Equal IoU with two identical boxes: the first one wins, as argmax does."""
    anchors = torch.tensor([[0.0, 0, 10, 10]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]]])
    idx, pos, _ = match_anchors_batched(anchors, boxes, torch.tensor([[0, 1]]), force_match=force)
    assert pos.all()
    assert idx.item() == (1 if force else 0)  # the forced match takes the later of exact ties (documented)
