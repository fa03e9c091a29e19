"""Problem 1 model and loss: shapes, the objectness prior, loss terms, hard negatives, and a tiny overfit."""
from __future__ import annotations

import math

import pytest
import torch

from problem1.config import ANCHOR_SCALES, FEATURE_MAP_SIZES
from problem1.loss import DetectionLoss, hard_negative_mining
from problem1.model import OBJECTNESS_PRIOR, MultiScaleDetector
from problem1.utils import default_anchors, flatten_predictions, generate_anchors

ANCHORS = default_anchors()
KEYS = {"loss_obj", "loss_cls", "loss_loc", "loss_total"}


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 10, 40, 40], [100, 100, 196, 196]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image without objects
        {"boxes": torch.tensor([[50.0, 60, 110, 120]]), "labels": torch.tensor([1])},
    ]


def _random_outputs(b: int, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 24, s, s, generator=g).requires_grad_(requires_grad) for s in (56, 28, 14)]


def test_model_shapes_and_objectness_prior():
    model = MultiScaleDetector(num_classes=3, num_anchors=3).eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(2, 24, 56, 56), (2, 24, 28, 28), (2, 24, 14, 14)]
    flat = flatten_predictions(outs, 3)
    assert flat.shape == (2, 12348, 8)
    # the objectness channel starts near the prior everywhere (weights std 0.01), the class logits near 0
    p = torch.sigmoid(flat[..., 4])
    assert abs(p.mean().item() - OBJECTNESS_PRIOR) < 0.005
    assert math.isclose(torch.sigmoid(model.heads[0].pred.bias[4]).item(), OBJECTNESS_PRIOR, rel_tol=1e-5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.kernel_size in ((3, 3), (1, 1)) for m in convs) and len(convs) == 5 + 6


def test_loss_keys_finite_and_weighted():
    crit = DetectionLoss()
    outs = _random_outputs(3, requires_grad=True)
    losses = crit(outs, _targets(), generate_anchors(FEATURE_MAP_SIZES, ANCHOR_SCALES))
    assert set(losses) == KEYS
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    total = losses["loss_obj"] + losses["loss_cls"] + 2 * losses["loss_loc"]
    torch.testing.assert_close(losses["loss_total"], total)
    losses["loss_total"].backward()
    assert all(torch.isfinite(o.grad).all() for o in outs)
    # the padded form and a pre-flattened prediction tensor give the same numbers
    from problem1.utils import pad_targets

    again = crit(flatten_predictions([o.detach() for o in outs], 3), pad_targets(_targets()), ANCHORS)
    for k in KEYS:
        torch.testing.assert_close(again[k], losses[k].detach())


def test_loss_without_any_object_is_finite_and_uses_negatives():
    crit = DetectionLoss(min_negatives=3)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    outs = _random_outputs(2, requires_grad=True)
    losses = crit(outs, empty, ANCHORS)
    assert losses["loss_cls"] == 0 and losses["loss_loc"] == 0
    assert losses["loss_obj"] > 0  # the hardest negatives of each image still teach "background"
    losses["loss_total"].backward()
    assert sum(int((o.grad != 0).sum()) for o in outs) == 2 * 3  # 3 negatives per image, objectness only


def test_hard_negative_mining_picks_highest_losses():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2, 0.8],
                         [0.3, 0.1, 0.2, 0.6, 0.4, 0.5]])
    pos = torch.tensor([[True, False, False, False, False, False],
                        [False, False, False, False, False, False]])
    neg = torch.tensor([[False, False, True, True, True, True],  # anchor 1 is in the ignore band
                        [True, True, True, True, True, True]])
    sel = hard_negative_mining(loss, pos, neg, ratio=3, min_negatives=2)
    assert sel[0].tolist() == [False, False, True, True, False, True]  # 3 per positive: 0.8, 0.7, 0.5
    assert sel[1].tolist() == [False, False, False, True, False, True]  # no positive: min_negatives = 2
    assert not (sel & ~neg).any()
    # fewer candidates than asked for: all of them
    assert hard_negative_mining(loss[:1], pos[:1], neg[:1], ratio=10).sum() == 4


def test_hard_negative_selection_same_on_gpu_path():
    """The sort-based selection used on CUDA picks exactly what topk picks on CPU."""
    from problem1.loss import _top_per_row

    g = torch.Generator().manual_seed(0)
    values = torch.rand(6, 500, generator=g)
    values[values < 0.3] = float("-inf")  # non-candidates
    counts = torch.tensor([0, 1, 7, 40, 350, 500])
    counts = torch.minimum(counts, torch.isfinite(values).sum(1))
    a, b = _top_per_row(values, counts, full_sort=False), _top_per_row(values, counts, full_sort=True)
    assert torch.equal(a, b) and a.sum(1).tolist() == counts.tolist()


def test_force_match_flag_changes_positives():
    tiny = [{"boxes": torch.tensor([[100.0, 100, 112, 130]]), "labels": torch.tensor([0])}]  # no anchor at 0.5
    outs = _random_outputs(1)
    with_force = DetectionLoss(force_match=True)(outs, tiny, ANCHORS)
    without = DetectionLoss(force_match=False)(outs, tiny, ANCHORS)
    assert with_force["loss_loc"] > 0 and with_force["loss_cls"] > 0
    assert without["loss_loc"] == 0 and without["loss_cls"] == 0


@pytest.mark.xdist_group("overfit_detector")
def test_tiny_overfit(overfit_detector):
    """Four training images, ten optimiser steps: the total loss must at least halve, every term must fall."""
    history = overfit_detector[2][:10]
    first, last = history[0], history[-1]
    assert last["loss_total"] <= 0.5 * first["loss_total"], history
    for k in ("loss_obj", "loss_cls", "loss_loc"):
        assert last[k] < 0.8 * first[k], (k, history)
    assert overfit_detector[2][-1]["loss_total"] < last["loss_total"]  # and it goes on falling to step 20


def test_loss_batched_equals_per_image_sum():
    """Normalising by the batch's positives: the batch loss is the positive-weighted mean of per-image losses."""
    crit = DetectionLoss()
    outs = _random_outputs(3, seed=3)
    targets = _targets()
    batch = crit(outs, targets, ANCHORS)
    from problem1.utils import match_anchors_to_targets

    n_pos = [int(match_anchors_to_targets(ANCHORS, t["boxes"], t["labels"])[2].sum()) for t in targets]
    parts = [crit([o[i:i + 1] for o in outs], targets[i:i + 1], ANCHORS) for i in range(3)]
    for k in ("loss_cls", "loss_loc"):
        weighted = sum(p[k] * max(n, 1) for p, n in zip(parts, n_pos, strict=True)) / sum(n_pos)
        torch.testing.assert_close(batch[k], weighted)
