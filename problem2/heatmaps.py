"""Gaussian heatmap math in heatmap pixels: rendering targets (2-D maps and their 1-D profiles), finding their peaks
to sub-pixel precision, and the soft-argmax expectation.

Everything here works in heatmap pixel coordinates ``(u, v)``: pixel ``j`` has its centre at ``u = j`` (for SimCC's
1-D profiles a "pixel" is a bin). The codecs in ``codec.py`` convert from and to image pixels (the convention is
written there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from problem2.config import DECODERS

DARK_BLUR_SIGMA = 1.0  # heatmap pixels; measured best of {0, 0.5, 1, 2} on a partly trained 64x64 model
PAIR_PEAK_RATIO = 0.5  # a second peak at least this high (relative to the first) is the other hand


# --- rendering ---------------------------------------------------------------------------------------------------

def gaussian_profiles(uv: torch.Tensor, visible: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """The 1-D Gaussians ``exp(-(i - u0)^2 / (2 sigma^2))`` over ``size`` pixels along each axis, peak 1 at ``uv``.

    A 2-D target is their outer product (:func:`gaussian_heatmaps`); SimCC's labels are the profiles themselves.

    Args:
        uv (Tensor[..., K, 2]): float32 centres in pixels of the profile; visible (Bool[..., K]): False gives zeros.
        sigma: standard deviation in pixels of the profile.
    Returns:
        Tensor[..., K, 2, size] float32: the x-profile at ``[..., 0, :]``, the y-profile at ``[..., 1, :]``.
    """
    grid = torch.arange(size, dtype=torch.float32, device=uv.device)
    g = torch.exp(-(grid - uv[..., None]) ** 2 / (2.0 * sigma * sigma))  # [..., K, 2, size]
    # Tails beyond ~9 sigma become 0 rather than float32 denormals, which slow every op that reads them.
    return torch.where(visible[..., None, None] & (g >= 1e-18), g, 0.0)


def gaussian_heatmaps(uv: torch.Tensor, visible: torch.Tensor, heatmap_size: int, sigma: float) -> torch.Tensor:
    """One Gaussian per keypoint, ``exp(-((u-u0)^2 + (v-v0)^2) / (2 sigma^2))``, peak 1 at the exact position.

    The Gaussian is separable, so a batch of maps is the outer product of two 1-D profiles (about 0.5 ms for
    32 x 5 maps of 64 x 64: cheap enough to build targets on the fly instead of storing them).

    Args:
        uv (Tensor[..., K, 2]): float32 centres in heatmap pixels; visible (Bool[..., K]): False gives an all-zero map.
        sigma: standard deviation in heatmap pixels.
    Returns:
        Tensor[..., K, hs, hs] float32, indexed ``[..., v, u]``; the map's border truncates a Gaussian without
        moving its peak.
    """
    g = gaussian_profiles(uv, visible, heatmap_size, sigma)  # [..., K, 2, hs]: x- and y-profiles
    return g[..., 1, :, None] * g[..., 0, None, :]  # [..., K, hs(y), hs(x)]


# --- expectations and 1-D peaks (the integral and SimCC codecs) ----------------------------------------------------

def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integral regression (Sun et al. 2018; DSNT, Nibali et al. 2018): the expected position under the softmax
    of each map. Differentiable, so a loss on the position trains the maps.

    The expectation of a two-peaked map lies between its peaks, which is what the hand-placement metric
    (``metrics.hand_placement``) measures.

    Args:
        logits (Tensor[B, K, h, w]): one map per keypoint (any float dtype; computed in float32).
    Returns:
        ``(uv Tensor[B, K, 2] float32 heatmap pixels, probabilities Tensor[B, K, h, w] summing to 1 per map)``.
    """
    b, k, h, w = logits.shape
    p = logits.float().reshape(b, k, h * w).softmax(dim=-1).view(b, k, h, w)
    u = p.sum(dim=2) @ torch.arange(w, dtype=p.dtype, device=p.device)  # x-marginal [B, K, w] -> [B, K]
    v = p.sum(dim=3) @ torch.arange(h, dtype=p.dtype, device=p.device)  # y-marginal [B, K, h] -> [B, K]
    return torch.stack([u, v], dim=-1), p


def decode_profiles(logits: torch.Tensor) -> torch.Tensor:
    """Sub-pixel maximum of each 1-D profile of log-probabilities (SimCC's per-axis classifier outputs).

    The argmax, then one Newton step on the parabola through it and its two neighbours (the stencil is moved
    inside at the ends, where the parabola is the same): the 1-D form of the ``'taylor'`` decoder, exact for the
    log of a Gaussian, kept within 1 pixel of the argmax and at the argmax where the profile has no maximum there.

    Args:
        logits (Tensor[..., L]): one profile per keypoint and axis, ``L >= 3`` (any additive constant).
    Returns:
        Tensor[...] float32: positions in pixels of the profile (pixel ``i`` centred at ``i``).
    """
    f = logits.detach().float()
    n = f.shape[-1]
    i = f.argmax(dim=-1)  # [...]
    c = i.clamp(1, n - 2)
    s = f.gather(-1, c[..., None] + torch.arange(-1, 2, device=f.device))  # [..., 3]: left, centre, right
    grad, curv = 0.5 * (s[..., 2] - s[..., 0]), s[..., 2] - 2 * s[..., 1] + s[..., 0]
    peak = c - grad / curv.clamp_max(-1e-12)
    peak = torch.where((curv < 0) & torch.isfinite(peak), peak, i.float())
    return i + (peak - i).clamp(-1.0, 1.0)


# --- peak refinement ---------------------------------------------------------------------------------------------

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


def refine_peaks(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor, decoder: str, blur_sigma: float
                 ) -> torch.Tensor:
    """Sub-pixel position of the peaks at integer ``(px, py) [B, K]`` of ``maps [B, K, h, w]`` -> ``[B, K, 2]``,
    within 1 heatmap pixel of the integer position (``decoder``: see :func:`decode_heatmaps`)."""
    _, _, h, w = maps.shape
    argmax = torch.stack([px, py], dim=-1).float()  # [B, K, 2] heatmap pixels
    if decoder == "quarter":
        n = _neighbourhood(maps, px, py)
        inner_x, inner_y = (px > 0) & (px < w - 1), (py > 0) & (py < h - 1)  # both neighbours exist
        step = torch.stack([torch.where(inner_x, torch.sign(n[..., 1, 2] - n[..., 1, 0]), 0.0),
                            torch.where(inner_y, torch.sign(n[..., 2, 1] - n[..., 0, 1]), 0.0)], dim=-1)
        return argmax + 0.25 * step
    if decoder in ("dark", "taylor") and min(h, w) >= 3:
        peak = _quadratic_peak(maps, px, py)
        if decoder == "dark" and blur_sigma > 0:
            r = _blur_radius(blur_sigma)
            inside = (px > r) & (px < w - 1 - r) & (py > r) & (py < h - 1 - r)  # stencil clear of padding
            peak = torch.where(inside[..., None], _quadratic_peak(maps, px, py, blur_sigma), peak)
        return argmax + (peak - argmax).clamp(-1.0, 1.0)
    return argmax


def decode_pair(ma: torch.Tensor, mb: torch.Tensor, decoder: str, blur_sigma: float = DARK_BLUR_SIGMA
                ) -> torch.Tensor:
    """Two keypoints whose labels the image cannot tell apart, decoded together: ``[B, h, w] x 2 -> [B, 2, 2]``.

    Trained with MSE on such labels, both maps approach the posterior mean, half a Gaussian on each
    of the two places, so decoding each map alone puts both labels on the same place. Here the summed
    map's two highest local maxima are the two places; if the second is at least ``PAIR_PEAK_RATIO`` of
    the first, each label gets one place (the assignment the two maps prefer, i.e. "commit to one
    assignment"), else the places have merged into one peak and both labels get it (the midpoint).
    Returns heatmap pixels, row 0 for ``ma``'s label.
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
    peaks = refine_peaks(s.expand(b, 2, h, w), idx % w, idx // w, decoder, blur_sigma)  # [B, 2, 2]
    at = lambda m, i: m.flatten(1).gather(1, i[:, None])[:, 0]  # noqa: E731
    keep = at(ma, idx[:, 0]) + at(mb, idx[:, 1]) >= at(ma, idx[:, 1]) + at(mb, idx[:, 0])
    return torch.where(keep[:, None, None], peaks, peaks.flip(1))


def decode_heatmaps(heatmaps: torch.Tensor, decoder: str = "dark", blur_sigma: float = DARK_BLUR_SIGMA,
                    pairs: tuple[tuple[int, int], ...] = ()) -> torch.Tensor:
    """Peak of every map, in heatmap pixels.

    Args:
        heatmaps (Tensor[B, K, h, w]): one map per keypoint (any float dtype; decoded in float32).
        decoder:
            ``'dark'``: DARK (Zhang et al. 2020): blur the map with a Gaussian of ``blur_sigma`` heatmap
            pixels (it smooths a predicted map towards a Gaussian and leaves a Gaussian's centre in place),
            then take the maximum of the quadratic fitted to the log-heatmap around the argmax
            (:func:`_quadratic_peak`). Near the border, where blurring would need pixels beyond it, the
            unblurred map is used.
            ``'taylor'``: the same quadratic step without the blur. A Gaussian's log is quadratic, so both
            invert :func:`gaussian_heatmaps` up to float rounding.
            ``'quarter'``: argmax plus a quarter pixel towards the larger neighbour (Newell et al. 2016).
            ``'argmax'``: the integer argmax.
        pairs: index pairs of keypoints whose labels are ambiguous, decoded together by :func:`decode_pair`.
    Returns:
        Tensor[B, K, 2]: ``(u, v)`` float32 heatmap pixels.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [B, K, h, w], got {list(heatmaps.shape)}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    maps = heatmaps.detach().float()
    w = maps.shape[-1]
    flat_idx = maps.flatten(2).argmax(dim=-1)  # [B, K]
    uv = refine_peaks(maps, flat_idx % w, flat_idx // w, decoder, blur_sigma)  # [B, K, 2]
    for a, b in pairs:
        uv[:, [a, b]] = decode_pair(maps[:, a], maps[:, b], decoder, blur_sigma)
    return uv
