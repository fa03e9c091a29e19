"""Problem 2 targets and decoding: the pixel convention, render -> decode round trips, borders, regression units."""
from __future__ import annotations

import pytest
import torch

from problem2.dataset import (
    canonicalize_hands,
    heatmap_to_pixels,
    pixels_to_heatmap,
    pixels_to_unit,
    render_heatmaps,
    render_heatmaps_batch,
    unit_to_pixels,
)
from problem2.evaluate import decode, extract_keypoints_from_heatmaps


def test_coordinate_frames_invert_and_agree():
    x = torch.tensor([-0.5, 0.0, 63.5, 127.0, 127.5])
    assert torch.allclose(heatmap_to_pixels(pixels_to_heatmap(x, 128, 64), 128, 64), x)
    assert torch.allclose(unit_to_pixels(pixels_to_unit(x)), x)
    # The image extent [-0.5, 127.5] is [0, 1] in units and [-0.5, hs - 0.5] in heatmap pixels.
    assert pixels_to_unit(torch.tensor([-0.5, 127.5])).tolist() == [0.0, 1.0]
    assert pixels_to_heatmap(torch.tensor([-0.5, 127.5]), 128, 64).tolist() == [-0.5, 63.5]
    # Heatmap pixel j covers image pixels 2j and 2j+1: its centre is at image x = 2j + 0.5.
    assert heatmap_to_pixels(torch.tensor([0.0, 10.0]), 128, 64).tolist() == [0.5, 20.5]


def test_peak_is_one_at_exact_subpixel_position():
    # Image x = 20.5 is the centre of heatmap pixel 10 (64x64): the map's maximum is exactly 1 there.
    hm = render_heatmaps(torch.tensor([[20.5, 40.5]]), 128, 64, sigma=2.0)
    assert hm.shape == (1, 64, 64)
    assert hm[0, 20, 10] == 1.0 and hm.max() == 1.0
    # An integer keypoint (x = 20) sits a quarter heatmap pixel left of that centre: not rounded, so the
    # two neighbouring pixels straddling it keep the Gaussian's exact values.
    hm = render_heatmaps(torch.tensor([[20.0, 40.5]]), 128, 64, sigma=2.0)
    u = 20.0 / 2 + 0.25 - 0.5  # (x + 0.5) / s - 0.5
    expect = torch.exp(-(torch.tensor([9.0, 10.0]) - u) ** 2 / 8)
    assert torch.allclose(hm[0, 20, 9:11], expect)
    assert hm.max() < 1.0


@pytest.mark.parametrize("hs,sigma", [(64, 2.0), (64, 1.0), (64, 4.0), (32, 2.0), (128, 2.0), (128, 1.0)])
def test_render_decode_round_trip(hs, sigma):
    g = torch.Generator().manual_seed(hs + int(10 * sigma))
    s = 128 / hs
    margin = 3 * sigma * s  # at least 3 sigma from the border, in image pixels
    kp = torch.rand(200, 5, 2, generator=g) * (127 - 2 * margin) + margin
    hm = render_heatmaps_batch(kp, 128, hs, sigma)
    err = (extract_keypoints_from_heatmaps(hm, 128) - kp).norm(dim=-1)
    assert err.mean() <= 0.05 and err.max() <= 0.2
    assert err.max() < 1e-3  # in fact exact up to float rounding: the log of a Gaussian is quadratic
    # The integer argmax is off by up to half a heatmap pixel per axis; quarter offset halves that.
    err_argmax = (extract_keypoints_from_heatmaps(hm, 128, "argmax") - kp).norm(dim=-1)
    err_quarter = (extract_keypoints_from_heatmaps(hm, 128, "quarter") - kp).norm(dim=-1)
    assert err_argmax.max() <= s * 0.5 * 2 ** 0.5 + 1e-4
    assert err_quarter.mean() < err_argmax.mean()


def test_keypoints_on_and_beyond_the_border():
    kp = torch.tensor([[0.0, 0.0], [127.0, 127.0], [-0.5, 64.0], [127.5, 3.0],  # on the border: truncated
                       [-0.6, 10.0], [130.0, 5.0], [5.0, -3.0], [float("nan"), 4.0]])  # outside: all zero
    hm = render_heatmaps(kp, 128, 64, 2.0)
    assert (hm[4:] == 0).all()
    assert (hm[:4].amax(dim=(1, 2)) > 0.9).all()
    # Truncated, not moved: the decoded peak is still the keypoint (the stencil slides inside the map).
    dec = extract_keypoints_from_heatmaps(hm[None, :4], 128)[0]
    assert torch.allclose(dec, kp[:4], atol=1e-3)
    # Pixel (0, 0) at 64x64 holds the Gaussian's value at its centre, image (0.5, 0.5).
    assert torch.isclose(hm[0, 0, 0], torch.exp(torch.tensor(-2 * 0.25 ** 2 / 8)))


def test_batched_render_equals_per_image():
    kp = torch.rand(3, 5, 2) * 127
    batched = render_heatmaps_batch(kp, 128, 32, 1.5)
    assert batched.shape == (3, 5, 32, 32)
    for i in range(3):
        assert torch.equal(batched[i], render_heatmaps(kp[i], 128, 32, 1.5))


def test_dark_decoder_is_robust_on_flat_and_noisy_maps():
    flat = torch.zeros(2, 5, 64, 64)
    assert torch.isfinite(extract_keypoints_from_heatmaps(flat)).all()
    noisy = torch.randn(2, 5, 64, 64)
    out = extract_keypoints_from_heatmaps(noisy)
    argmax = extract_keypoints_from_heatmaps(noisy, method="argmax")
    assert torch.isfinite(out).all() and ((out - argmax).abs() <= 2.0 + 1e-5).all()  # within 1 heatmap px


def test_regression_decode_is_the_same_pixel_frame():
    kp = torch.rand(4, 5, 2) * 127
    units = pixels_to_unit(kp).flatten(1)  # the regression target, [B, 10]
    assert torch.allclose(decode("regression", units), kp, atol=1e-4)
    assert torch.allclose(decode("heatmap", render_heatmaps_batch(kp)), kp, atol=1e-3)


def test_canonical_hands_orders_by_x_then_y():
    kp = torch.zeros(3, 5, 2)
    kp[0, 1], kp[0, 2] = torch.tensor([50.0, 1.0]), torch.tensor([40.0, 2.0])  # swapped
    kp[1, 1], kp[1, 2] = torch.tensor([30.0, 1.0]), torch.tensor([40.0, 2.0])  # kept
    kp[2, 1], kp[2, 2] = torch.tensor([30.0, 9.0]), torch.tensor([30.0, 2.0])  # tie in x: by y
    out = canonicalize_hands(kp, (1, 2))
    assert out[0, 1].tolist() == [40.0, 2.0] and out[1, 1].tolist() == [30.0, 1.0] and out[2, 1].tolist() == [30, 2]
    assert torch.equal(out[:, [0, 3, 4]], kp[:, [0, 3, 4]])
