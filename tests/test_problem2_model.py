"""Problem 2 models and data: shapes of every ablation variant, a tiny overfit, the dataset's batches and targets."""
from __future__ import annotations

import pytest
import torch
from helpers import overfit

from problem2.codec import HeatmapCodec, RegressionCodec, render_heatmaps, render_heatmaps_batch
from problem2.dataset import KeypointDataset, load_split
from problem2.loss import KeypointMSELoss
from problem2.methods import build_model
from problem2.model import HeatmapNet, RegressionNet


@pytest.mark.parametrize("heatmap_size", [16, 32, 64, 128])
@pytest.mark.parametrize("skip", [True, False])
def test_heatmap_net_shapes(heatmap_size, skip):
    net = HeatmapNet(5, heatmap_size, skip).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 128, 128))
    assert out.shape == (2, 5, heatmap_size, heatmap_size)
    assert len(net.ups) == {16: 1, 32: 2, 64: 3, 128: 4}[heatmap_size]  # one upsampling stage per doubling
    assert bool(net.skip_from) == skip


def test_spec_architecture_at_default():
    net = HeatmapNet()
    widths = [(u[0].in_channels, u[0].out_channels) for u in net.ups]
    assert widths == [(256, 128), (256, 64), (128, 32)] and net.final.in_channels == 32
    no_skip = HeatmapNet(skip=False)
    assert [(u[0].in_channels, u[0].out_channels) for u in no_skip.ups] == [(256, 128), (128, 64), (64, 32)]
    assert HeatmapNet(heatmap_size=32).final.in_channels == 128
    with pytest.raises(ValueError):
        HeatmapNet(heatmap_size=48)


def test_regression_net():
    net = RegressionNet(5).eval()
    out = net(torch.rand(3, 1, 128, 128))
    assert out.shape == (3, 10) and (out >= 0).all() and (out <= 1).all()
    assert isinstance(build_model("regression"), RegressionNet) and isinstance(build_model("heatmap"), HeatmapNet)


@pytest.mark.parametrize("method", ["heatmap", "regression"])
def test_channels_last_gives_the_same_outputs(method):
    from common.runtime import memory_format

    torch.manual_seed(0)
    ref = build_model(method).eval()
    cl = build_model(method).eval()
    cl.load_state_dict(ref.state_dict())
    cl.to(memory_format=memory_format(True))
    x = torch.rand(2, 1, 128, 128)  # NCHW-contiguous; with channels-last weights the convs still run NHWC
    with torch.no_grad():
        a, b = ref(x), cl(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if method == "heatmap":
        assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()


def test_heatmap_loss_falls_on_a_tiny_overfit(tiny_data):
    torch.manual_seed(0)
    ds = load_split(tiny_data, "train")
    images, targets, _ = ds.get_batch(torch.arange(4))
    net = HeatmapNet()
    losses = overfit(net, KeypointMSELoss(), images, targets, steps=20)
    assert losses[-1] < 0.1 * losses[0], losses


def test_dataset_items_batches_and_views(tiny_data):
    ds = load_split(tiny_data, "train")
    assert isinstance(ds, KeypointDataset) and len(ds) == 16 and ds.hands == (1, 2)
    image, target = ds[3]
    assert image.shape == (1, 128, 128) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert target.shape == (5, 64, 64)
    assert torch.equal(target, render_heatmaps_batch(ds.keypoints[3], 128, 64, 2.0))
    reg = ds.with_codec(RegressionCodec())
    assert reg.images is ds.images and isinstance(ds.codec, HeatmapCodec)  # a view: nothing decoded twice
    assert reg[3][1].shape == (10,) and torch.allclose(reg[3][1].view(5, 2) * 128 - 0.5, ds.keypoints[3])
    assert ds.with_codec(HeatmapCodec(heatmap_size=32, sigma=1.0))[0][1].shape == (5, 32, 32)
    g = torch.Generator().manual_seed(0)
    batches = list(ds.batches(6, g))
    assert [len(b[0]) for b in batches] == [6, 6, 4]
    seen = torch.cat([b[2] for b in batches])
    assert sorted(seen[:, 0, 0].tolist()) == sorted(ds.keypoints[:, 0, 0].tolist())  # a permutation


def test_batches_read_only_memory_and_match_per_image_targets(tiny_data, monkeypatch):
    """The per-step budget of the issue rests on batches being built from tensors in memory: no image is opened
    while batching, and the batched targets equal the per-image rendering of the batch's keypoints."""
    import PIL.Image

    ds = load_split(tiny_data, "train")  # decodes the PNGs, once

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was opened while batching")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    seen = []
    for images, targets, keypoints in ds.batches(6, torch.Generator().manual_seed(0)):
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 128, 128)
        torch.testing.assert_close(targets, torch.stack([render_heatmaps(k, 128, 64, 2.0) for k in keypoints]))
        seen.append(keypoints)
    assert sum(len(k) for k in seen) == len(ds)


def test_limit_keeps_the_first_images(tiny_data):
    full, few = load_split(tiny_data, "val"), load_split(tiny_data, "val", limit=3)
    assert len(few) == 3 and few.file_names == full.file_names[:3]
    assert torch.equal(few.images, full.images[:3]) and torch.equal(few.keypoints, full.keypoints[:3])
