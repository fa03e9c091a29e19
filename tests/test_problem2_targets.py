"""Problem 2 codecs: the pixel convention, render -> decode round trips, borders, regression units, and the joint
decoding of the two hands (known answers)."""
from __future__ import annotations

import pytest
import torch

from problem2.codec import (
    HeatmapCodec,
    RegressionCodec,
    extract_keypoints_from_heatmaps,
    heatmap_to_pixels,
    pixels_to_heatmap,
    pixels_to_unit,
    render_heatmaps,
    render_heatmaps_batch,
    unit_to_pixels,
)
from problem2.config import Config
from problem2.dataset import canonicalize_hands
from problem2.methods import build_codec

NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]


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
    err = (extract_keypoints_from_heatmaps(hm, 128) - kp).norm(dim=-1)  # DARK, the default
    assert err.mean() <= 0.05 and err.max() <= 0.2
    assert err.max() < 1e-3  # in fact exact up to float rounding: the log of a Gaussian is quadratic
    # The integer argmax is off by up to half a heatmap pixel per axis; quarter offset halves that.
    err_argmax = (extract_keypoints_from_heatmaps(hm, 128, decoder="argmax") - kp).norm(dim=-1)
    err_quarter = (extract_keypoints_from_heatmaps(hm, 128, decoder="quarter") - kp).norm(dim=-1)
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


def test_dark_decoder_on_flat_and_noisy_maps():
    # No curvature, so nothing to refine: exactly the argmax (an unguarded Newton step would divide by zero).
    flat = torch.zeros(2, 5, 64, 64)
    assert torch.equal(extract_keypoints_from_heatmaps(flat, 128, "dark"),
                       extract_keypoints_from_heatmaps(flat, 128, "argmax"))
    # Pure noise, negative values included (where the log is undefined): finite everywhere.
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(extract_keypoints_from_heatmaps(torch.randn(2, 5, 64, 64, generator=g), 128, "dark")).all()
    # Gaussian targets plus 3% noise: DARK's blur keeps the sub-pixel estimate close (known answer: mean 0.09 px,
    # max 0.26 px at this seed), where the un-blurred Taylor step is 3x worse and the argmax is off by its grid.
    kp = torch.rand(200, 5, 2, generator=g) * 100 + 14  # clear of the border
    noisy = render_heatmaps_batch(kp, 128, 64, 2.0) + 0.03 * torch.randn(200, 5, 64, 64, generator=g)
    err = {m: (extract_keypoints_from_heatmaps(noisy, 128, m) - kp).norm(dim=-1) for m in ("dark", "taylor", "argmax")}
    assert err["dark"].mean() < 0.15 and err["dark"].max() < 0.5, err["dark"]
    assert err["dark"].mean() < 0.5 * err["taylor"].mean() < err["argmax"].mean()


@pytest.mark.parametrize("codec", [HeatmapCodec(), HeatmapCodec(heatmap_size=32, sigma=1.0), RegressionCodec()],
                         ids=["heatmap64", "heatmap32", "regression"])
def test_codecs_round_trip_in_the_same_pixel_frame(codec):
    kp = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(1)) * 100 + 14
    targets = codec.encode(kp)
    expected = (4, 10) if isinstance(codec, RegressionCodec) else (4, 5, codec.heatmap_size, codec.heatmap_size)
    assert targets.shape == expected and targets.dtype == torch.float32
    torch.testing.assert_close(codec.decode(targets), kp, atol=1e-3, rtol=0)


def test_regression_targets_are_interleaved_unit_coordinates():
    kp = torch.tensor([[[-0.5, 127.5], [63.5, 0.0]]])  # [1, 2, 2]: corner and centre in x, top row in y
    assert RegressionCodec().encode(kp).tolist() == [[0.0, 1.0, 0.5, 0.5 / 128]]
    assert torch.equal(RegressionCodec().decode(pixels_to_unit(kp).flatten(1)), kp)


def test_build_codec_from_config_and_checkpoint_dicts():
    assert build_codec("heatmap", Config(), NAMES) == HeatmapCodec(128, 64, 2.0, "dark", ((1, 2),))
    assert build_codec("heatmap", Config(sigma=3.0, heatmap_size=32, decoder="argmax"), NAMES) == HeatmapCodec(
        128, 32, 3.0, "argmax", ((1, 2),))
    assert build_codec("heatmap", Config(hand_pairs=False), NAMES).hand_pairs == ()
    assert build_codec("heatmap", Config(canonical_hands=True), NAMES).hand_pairs == ()  # labels by position
    assert build_codec("heatmap", Config(), ["a", "b"]).hand_pairs == ()  # no hands in the data
    old = {"heatmap_size": 64, "sigma": 2.0, "decoder": "dark", "canonical_hands": False}  # before --hand-pairs
    assert build_codec("heatmap", old, NAMES).hand_pairs == ((1, 2),)
    assert build_codec("regression", Config(), NAMES) == RegressionCodec(128)
    with pytest.raises(ValueError):
        build_codec("pose-transformer", Config(), NAMES)
    with pytest.raises(ValueError):
        HeatmapCodec(decoder="soft-argmax")


# --- joint decoding of the two hands: known answers ----------------------------------------------------------------

FIGURE = torch.tensor([[64.0, 20.0], [30.0, 60.0], [96.0, 66.0], [50.0, 110.0], [78.0, 110.0]])  # hands 66 px apart


def _hand_maps(kp: torch.Tensor, w_left: float, codec: HeatmapCodec) -> torch.Tensor:
    """Perfect maps for head and feet; each hand map mixes the two hands' Gaussians: ``w_left`` of the left one in
    ``left_hand``'s map and ``1 - w_left`` in ``right_hand``'s (w = 0.5 is the MSE optimum of ambiguous labels)."""
    t = codec.encode(kp[None])  # [1, 5, hs, hs]
    maps = t.clone()
    maps[:, 1] = w_left * t[:, 1] + (1 - w_left) * t[:, 2]
    maps[:, 2] = (1 - w_left) * t[:, 1] + w_left * t[:, 2]
    return maps


@pytest.mark.parametrize("decoder", ["dark", "taylor"])
def test_joint_decoding_gives_each_hand_one_prediction(decoder):
    joint = HeatmapCodec(decoder=decoder, hand_pairs=((1, 2),))
    maps = _hand_maps(FIGURE, 0.5, joint)  # both hand maps: half a Gaussian on each hand
    pred = joint.decode(maps)[0]
    hands = pred[[1, 2]]
    if hands[0, 0] > hands[1, 0]:  # equal evidence: either assignment is right, so compare as a set
        hands = hands.flip(0)
    torch.testing.assert_close(hands, FIGURE[[1, 2]], atol=1e-3, rtol=0)
    torch.testing.assert_close(pred[[0, 3, 4]], FIGURE[[0, 3, 4]], atol=1e-3, rtol=0)  # the others untouched
    # Each map alone puts both labels on the same hand.
    alone = HeatmapCodec(decoder=decoder).decode(maps)[0]
    assert (alone[1] - alone[2]).norm() < 1e-3


@pytest.mark.parametrize("w_left,expected", [(0.7, [1, 2]), (0.3, [2, 1])])
def test_joint_decoding_gives_each_label_the_hand_its_map_prefers(w_left, expected):
    codec = HeatmapCodec(hand_pairs=((1, 2),))
    pred = codec.decode(_hand_maps(FIGURE, w_left, codec))[0]
    torch.testing.assert_close(pred[[1, 2]], FIGURE[expected], atol=1e-3, rtol=0)


def test_merged_peaks_give_both_labels_the_midpoint():
    # Hands 4 image px (2 heatmap px, less than 2 sigma) apart: their Gaussians sum to a single peak at the
    # midpoint. It is the centre of heatmap pixel (30, 20), image (60.5, 40.5), so the fit is exact by symmetry.
    kp = FIGURE.clone()
    kp[1], kp[2] = torch.tensor([58.5, 40.5]), torch.tensor([62.5, 40.5])
    codec = HeatmapCodec(hand_pairs=((1, 2),))
    pred = codec.decode(_hand_maps(kp, 0.6, codec))[0]
    torch.testing.assert_close(pred[[1, 2]], torch.tensor([[60.5, 40.5], [60.5, 40.5]]), atol=1e-4, rtol=0)


def test_a_second_peak_below_half_the_first_is_not_a_hand():
    codec = HeatmapCodec(hand_pairs=((1, 2),))
    t = codec.encode(FIGURE[None])
    maps = t.clone()
    maps[:, 1] = maps[:, 2] = t[:, 1] + 0.45 * t[:, 2]  # summed peaks 2 and 0.9: ratio 0.45 < PAIR_PEAK_RATIO
    torch.testing.assert_close(codec.decode(maps)[0, [1, 2]], FIGURE[[1, 1]], atol=1e-2, rtol=0)
    maps[:, 1] = maps[:, 2] = t[:, 1] + 0.55 * t[:, 2]  # ratio 0.55: two hands
    assert {tuple(p) for p in codec.decode(maps)[0, [1, 2]].round().tolist()} == {(30.0, 60.0), (96.0, 66.0)}


def test_canonical_hands_orders_by_x_then_y():
    kp = torch.zeros(3, 5, 2)
    kp[0, 1], kp[0, 2] = torch.tensor([50.0, 1.0]), torch.tensor([40.0, 2.0])  # swapped
    kp[1, 1], kp[1, 2] = torch.tensor([30.0, 1.0]), torch.tensor([40.0, 2.0])  # kept
    kp[2, 1], kp[2, 2] = torch.tensor([30.0, 9.0]), torch.tensor([30.0, 2.0])  # tie in x: by y
    out = canonicalize_hands(kp, (1, 2))
    assert out[0, 1].tolist() == [40.0, 2.0] and out[1, 1].tolist() == [30.0, 1.0] and out[2, 1].tolist() == [30, 2]
    assert torch.equal(out[:, [0, 3, 4]], kp[:, [0, 3, 4]])
