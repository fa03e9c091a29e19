"""The detector's output layout, receptive fields and memory formats."""
import dataclasses

import pytest
import torch

from problem1.analysis import force_match_effect
from problem1.config import Config
from problem1.model import MultiScaleDetector, build_model
from problem1.utils import flatten_predictions, gather_predictions


@pytest.mark.parametrize("dilation", [1, 3])
def test_output_shapes_do_not_depend_on_head_dilation(dilation):
    out = MultiScaleDetector(head_dilation=dilation).eval()(torch.rand(2, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(2, 24, 56, 56), (2, 24, 28, 28), (2, 24, 14, 14)]


def test_receptive_fields_known_answers():
    # By hand, specified net: convs s1, s2 (block 1), s2 (block 2) -> 1+2+4 = 9 px at stride 4; the 3x3 head adds
    # 2*4 -> 17. Block 3: 9+8 = 17 at stride 8, head +16 -> 33. Block 4: 17+16 = 33 at stride 16, head +32 -> 65.
    assert MultiScaleDetector().receptive_fields() == [17, 33, 65]
    # A head dilated by 3 adds 3x as much: 9+24, 17+48, 33+96.
    assert MultiScaleDetector(head_dilation=3).receptive_fields() == [33, 65, 129]


def test_receptive_field_matches_gradient_support():
    """The analytic field equals the input region that one output cell's gradient actually reaches."""
    for dilation in (1, 3):
        torch.manual_seed(0)
        model = MultiScaleDetector(head_dilation=dilation).eval()
        x = torch.rand(1, 3, 224, 224, requires_grad=True)
        for scale, out in enumerate(model(x)):
            h = out.shape[2] // 2
            (g,) = torch.autograd.grad(out[0, :, h, h].sum(), x, retain_graph=True)
            cols = g.abs().sum(dim=(0, 1, 2)).nonzero().squeeze(1)
            assert int(cols.max() - cols.min() + 1) == model.receptive_fields()[scale], (dilation, scale)


def test_channels_last_gives_the_same_predictions():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    cfg = Config()
    ref = build_model(dataclasses.replace(cfg, channels_last=False)).eval()
    cl = build_model(dataclasses.replace(cfg, channels_last=True), ref.state_dict()).eval()
    assert cl.block1[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = ref(x), cl(x)
    for oa, ob in zip(a, b, strict=True):
        torch.testing.assert_close(oa, ob, rtol=1e-4, atol=1e-4)
    # the flattening used by the loss and the decoder reads either layout the same way
    torch.testing.assert_close(flatten_predictions(a, 3), flatten_predictions(b, 3), rtol=1e-4, atol=1e-4)
    bi, ai = torch.tensor([0, 1, 1]), torch.tensor([0, 9500, 12347])
    torch.testing.assert_close(gather_predictions(a, bi, ai, 3), gather_predictions(b, bi, ai, 3),
                               rtol=1e-4, atol=1e-4)


class _Boxes:
    """The two things ``force_match_effect`` reads from a dataset: its length and padded target batches."""

    def __init__(self, boxes: list[list[list[float]]]):
        g = max(len(b) for b in boxes)
        self.boxes = torch.zeros(len(boxes), g, 4)
        self.labels = torch.full((len(boxes), g), -1)
        for i, b in enumerate(boxes):
            if b:
                self.boxes[i, :len(b)] = torch.tensor(b)
                self.labels[i, :len(b)] = 0

    def __len__(self):
        return len(self.boxes)

    def get_batch(self, idx):
        return None, self.boxes[idx], self.labels[idx]


def test_force_match_effect_counts_rescued_objects():
    # Image 0: a 32 px box exactly on a scale-1 anchor (centre (18, 18), stride 4) -> positive without forcing;
    # a 6 px box overlaps no anchor at IoU >= 0.5 (the smallest anchor is 16 px) -> only the forced match gives
    # it an anchor. Image 1: no objects.
    ds = _Boxes([[[2.0, 2.0, 34.0, 34.0], [150.0, 150.0, 156.0, 156.0]], []])
    f = force_match_effect(ds, Config(), "toy")
    assert f["objects"] == 2
    assert f["objects_without_positive_unforced"] == 1
    assert f["made_positive_by_force"] == 1
    assert f["positives_with"] == f["positives_without"] + 1
