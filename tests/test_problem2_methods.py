"""Problem 2 beyond the specification (issue 13): soft-argmax and SimCC known answers, the regression variants, the
integral and SimCC models and criteria, where hand predictions land, checkpoints from before the variants, a tiny
overfit per new method, CLI smoke runs, and the study's plan, runs and generated conclusion."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import overfit, run_main, run_script_here
from torch import nn

from common.training import save_checkpoint
from problem2 import baseline, evaluate
from problem2.codec import (
    IntegralCodec,
    RegressionCodec,
    SimCCCodec,
    pixels_to_heatmap,
    render_heatmaps_batch,
)
from problem2.config import METHODS, PROBLEM, REGRESSION_HEADS, Config
from problem2.dataset import load_split
from problem2.heatmaps import soft_argmax
from problem2.loss import IntegralLoss, KeypointMSELoss, SimCCLoss
from problem2.methods import build_codec, build_criterion, build_model
from problem2.metrics import hand_placement, hand_placement_strategies, keypoint_errors, prediction_spread
from problem2.model import HeatmapNet, RegressionNet, SimCCNet
from problem2.report import study_conclusion

NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]


def log_of_gaussians(maps: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is ``maps`` normalised (what a perfectly trained integral or SimCC model outputs)."""
    return maps.clamp_min(1e-30).log()


# --- codecs: known answers -----------------------------------------------------------------------------------------

def test_soft_argmax_of_a_rendered_gaussian_is_its_centre():
    torch.manual_seed(0)
    kp = 20 + 87 * torch.rand(6, 5, 2)  # sub-pixel, at least 5 sigma (20 image px) from the border
    maps = render_heatmaps_batch(kp, 128, 64, 2.0)
    uv, p = soft_argmax(log_of_gaussians(maps))
    torch.testing.assert_close(p.sum(dim=(-2, -1)), torch.ones(6, 5))
    assert (uv - pixels_to_heatmap(kp, 128, 64)).abs().max() <= 0.025  # heatmap px: 0.05 image px
    assert (IntegralCodec().decode(log_of_gaussians(maps)) - kp).abs().max() <= 0.05  # image px, via the codec
    # The expectation of a two-peaked map is between the peaks: the midpoint for equal peaks.
    two = render_heatmaps_batch(torch.tensor([[[40.0, 60.0]], [[90.0, 70.0]]]), 128, 64, 2.0).sum(dim=0, keepdim=True)
    torch.testing.assert_close(IntegralCodec().decode(log_of_gaussians(two)), torch.tensor([[[65.0, 65.0]]]),
                               atol=0.05, rtol=0)


@pytest.mark.parametrize("split", [2.0, 3.0])
def test_simcc_round_trip_and_labels(split):
    torch.manual_seed(0)
    kp = -0.5 + 128 * torch.rand(8, 5, 2)
    kp[0, :2] = torch.tensor([[-0.5, -0.5], [127.5, 127.5]])  # the extreme corners of the image
    codec = SimCCCodec(split_ratio=split, sigma=2.0)
    labels = codec.encode(kp)
    assert codec.bins == round(128 * split) and labels.shape == (8, 5, 2, codec.bins)
    torch.testing.assert_close(labels.sum(dim=-1), torch.ones(8, 5, 2))
    nearest_bin = pixels_to_heatmap(kp, 128, codec.bins).round().long().clamp(0, codec.bins - 1)
    assert torch.equal(labels.argmax(dim=-1), nearest_bin)
    assert (codec.decode(log_of_gaussians(labels)) - kp).abs().max() <= 0.05
    # x and y are decoded apart: with two candidates per axis each takes its own maximum.
    a, b = codec.encode(torch.tensor([[[30.0, 60.0]]])), codec.encode(torch.tensor([[[90.0, 70.0]]]))
    mixed = torch.stack([0.6 * a[:, :, 0] + 0.4 * b[:, :, 0], 0.4 * a[:, :, 1] + 0.6 * b[:, :, 1]], dim=2)
    assert (codec.decode(log_of_gaussians(mixed)) - torch.tensor([[[30.0, 70.0]]])).abs().max() <= 0.05


def test_build_codec_and_criterion_per_method():
    cfg = Config(sigma=3.0, heatmap_size=32, simcc_split_ratio=4.0, simcc_sigma=1.5, integral_loss="euclidean",
                 integral_divergence=0.0)
    assert build_codec("integral", cfg, NAMES) == IntegralCodec(128, 32, 3.0)
    assert build_codec("simcc", cfg, NAMES) == SimCCCodec(128, 4.0, 1.5)
    assert isinstance(build_codec("regression", cfg, NAMES), RegressionCodec)
    for method in ("heatmap", "regression"):  # the specified criterion, whatever the other settings
        assert type(build_criterion(method, cfg)) is KeypointMSELoss
    integral = build_criterion("integral", cfg)
    assert isinstance(integral, IntegralLoss) and (integral.coord, integral.divergence_weight) == ("euclidean", 0.0)
    assert isinstance(build_criterion("simcc", cfg), SimCCLoss)
    with pytest.raises(ValueError):
        build_criterion("pose-transformer", cfg)


# --- models --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", REGRESSION_HEADS)
@pytest.mark.parametrize("dropout", [0.5, 0.0])
def test_regression_variants(head, dropout):
    net = build_model("regression", 5, Config(regression_head=head, dropout=dropout)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 128, 128))
    assert out.shape == (2, 10) and (out >= 0).all() and (out <= 1).all()
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [dropout, dropout]
    assert net.head[2].in_features == (256 * 8 * 8 if head == "flatten" else 256)
    assert (net.coord is not None) == (head == "coord")
    # Every head keeps the FC layers' parameter names of the specified model (older checkpoints load into it).
    assert [k for k in net.state_dict() if k.startswith("head.")] == [
        "head.2.weight", "head.2.bias", "head.5.weight", "head.5.bias", "head.8.weight", "head.8.bias"]


def test_pooling_discards_position_and_coord_channels_keep_it():
    """The hypothesis the variants test: the specified head's pooled features are the same wherever the figure is;
    after the CoordConv they are not."""
    torch.manual_seed(0)
    f = torch.zeros(1, 256, 8, 8)
    f[0, :, 2, 2] = torch.rand(256)
    moved = torch.roll(f, shifts=(3, 4), dims=(2, 3))  # the same features 3 rows down, 4 columns right
    gap, coord = RegressionNet(head="gap").eval(), RegressionNet(head="coord").eval()
    with torch.no_grad():
        assert torch.equal(gap.head[:2](f), gap.head[:2](moved))
        pooled = lambda x: coord.head[:2](coord.coord(x))  # noqa: E731
        assert (pooled(f) - pooled(moved)).abs().max() > 1e-5  # far beyond float rounding


def test_integral_and_simcc_models():
    x = torch.rand(2, 1, 128, 128)
    integral = build_model("integral")
    assert type(integral) is HeatmapNet  # the heatmap network; only the codec and criterion differ
    simcc = build_model("simcc", 5, Config(simcc_split_ratio=3.0, heatmap_size=32)).eval()
    assert isinstance(simcc, SimCCNet) and simcc.to_x.in_features == 32 * 32
    with torch.no_grad():
        assert integral.eval()(x).shape == (2, 5, 64, 64) and simcc(x).shape == (2, 5, 2, 384)
    assert {build_model(m).__class__.__name__ for m in METHODS} == {"HeatmapNet", "RegressionNet", "SimCCNet"}


# --- criteria ------------------------------------------------------------------------------------------------------

def test_criteria_known_answers():
    kp = torch.tensor([[[40.0, 50.0], [60.0, 64.0], [80.0, 70.0], [50.0, 90.0], [70.0, 90.0]]])
    codec = IntegralCodec()
    targets = codec.encode(kp)
    perfect = IntegralLoss()(log_of_gaussians(targets["heatmaps"]), targets)
    assert perfect["coord"] < 1e-5 and perfect["divergence"] < 1e-5
    # Maps one heatmap pixel (2 image px) to the right: the L1 and Euclidean terms are 1/64 of the image side.
    moved = log_of_gaussians(codec.encode(kp + torch.tensor([2.0, 0.0]))["heatmaps"])
    for kind in ("l1", "euclidean"):
        losses = IntegralLoss(kind, divergence_weight=0.0)(moved, targets)
        assert losses["coord"].item() == pytest.approx(1 / 64, abs=1e-5) and losses["loss"] == losses["coord"]
        assert 0 < losses["divergence"] < torch.log(torch.tensor(2.0))
    labels = SimCCCodec().encode(kp)
    assert SimCCLoss()(log_of_gaussians(labels), labels)["loss"] < 1e-5
    assert SimCCLoss()(torch.zeros_like(labels), labels)["loss"] > 1.0  # uniform logits


# --- where hand predictions land ------------------------------------------------------------------------------------

def figure(hand_gap: float = 40.0) -> torch.Tensor:
    """Head (60, 50), hands ``hand_gap`` apart at y = 60, feet (50, 80) and (70, 80)."""
    return torch.tensor([[60.0, 50.0], [60 - hand_gap / 2, 60.0], [60 + hand_gap / 2, 60.0], [50.0, 80.0],
                         [70.0, 80.0]])


def test_hand_placement_known_answers():
    gt = torch.stack([figure()] * 5 + [figure(1.0)])  # the last image's hands are 1 px apart: not "apart"
    gt[4, 2, 1] = 70.0  # image 4: the right hand (80, 70), 10 px lower than the left one (40, 60)
    pred = gt.clone()
    pred[1, [1, 2]] = torch.tensor([60.0, 60.0])  # both at the midpoint
    pred[2, [1, 2]] = gt[2, 1]  # both on the left hand
    pred[3, [1, 2]] = torch.tensor([[10.0, 10.0], [100.0, 100.0]])  # elsewhere
    pred[4, [1, 2]] = torch.tensor([[40.0, 70.0], [80.0, 60.0]])  # the x of one hand with the y of the other
    h = hand_placement(pred, gt, (1, 2))
    assert (h["images_apart"], h["fraction_apart"]) == (5, 5 / 6)
    assert (h["near_one_hand"], h["near_midpoint"], h["crossed"], h["elsewhere"]) == (0.4, 0.2, 0.2, 0.2)
    assert (h["one_per_hand"], h["hand_pck"]) == (0.2, 0.3)
    s = hand_placement_strategies(gt, (1, 2))
    assert (s["commit"]["near_one_hand"], s["commit"]["one_per_hand"], s["commit"]["hand_pck"]) == (1.0, 1.0, 0.5)
    assert (s["midpoint"]["near_midpoint"], s["midpoint"]["hand_pck"]) == (1.0, 0.0)


def test_prediction_spread_known_answers():
    torch.manual_seed(0)
    gt = 20 + 80 * torch.rand(10, 5, 2)
    mean = gt.mean(dim=0, keepdim=True)
    assert prediction_spread(gt + 3.0, gt) == pytest.approx(1.0)  # an offset still follows the figure
    assert prediction_spread(mean.expand_as(gt), gt) == pytest.approx(0.0, abs=1e-9)  # one pose for every image
    assert prediction_spread(mean + 0.5 * (gt - mean), gt) == pytest.approx(0.5)


# --- checkpoints from before the variants --------------------------------------------------------------------------

def test_checkpoint_without_the_new_settings_is_the_specified_model(tmp_path):
    torch.manual_seed(0)
    net = RegressionNet()
    new = {"regression_head", "dropout", "integral_loss", "integral_divergence", "simcc_split_ratio", "simcc_sigma"}
    config = {k: v for k, v in dataclasses.asdict(Config()).items() if k not in new}
    config.update(method="regression", num_keypoints=5, keypoint_names=NAMES)
    save_checkpoint(tmp_path / "regression_model.pth", problem=PROBLEM, config=config, model=net, epoch=3)
    model, ckpt = evaluate.load_model(tmp_path / "regression_model.pth", torch.device("cpu"))
    assert model.head_kind == "gap" and [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values(), strict=True))
    assert type(build_criterion("regression", ckpt["config"])) is KeypointMSELoss
    assert build_codec("regression", ckpt["config"], NAMES) == RegressionCodec()


# --- a tiny overfit per new method ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,settings,loss_ratio,px", [
    ("integral", {}, 0.4, 3.0),
    ("simcc", {}, 0.05, 2.0),
    ("regression", {"regression_head": "flatten", "dropout": 0.0}, 0.3, None),
    ("regression", {"regression_head": "coord", "dropout": 0.0}, 0.3, None),
])
def test_tiny_overfit(method, settings, loss_ratio, px, tiny_data):
    cfg = Config(**settings)
    ds = load_split(tiny_data, "train", limit=4)
    ds = ds.with_codec(build_codec(method, cfg, ds.keypoint_names))
    images, targets, keypoints = ds.get_batch(torch.arange(4))
    torch.manual_seed(0)
    net, criterion = build_model(method, 5, cfg), build_criterion(method, cfg)
    losses = overfit(net, criterion, images, targets, steps=30)
    assert losses[-1] < loss_ratio * losses[0], losses
    if px is not None:  # decoded in image pixels: the codec inverts what the criterion trained
        with torch.no_grad():
            out = net(images)  # after the last step, in training mode like the steps
        assert keypoint_errors(ds.codec.decode(out), keypoints).mean() < px


# --- CLI smoke runs ------------------------------------------------------------------------------------------------

def test_cli_smoke_every_new_method_then_evaluate(tiny_data, tmp_path, capsys):
    """Each new method or variant trained by ``train.py`` and evaluated by ``evaluate.py`` (their ``main``, in this
    process); the first three share a results folder, so evaluation covers every ``<method>_model.pth`` it finds."""
    shared, coord = tmp_path / "shared", tmp_path / "coord"
    cases = [(shared, ["--model", "integral"]), (shared, ["--model", "simcc"]),
             (shared, ["--model", "regression", "--regression-head", "flatten"]),
             (coord, ["--model", "regression", "--regression-head", "coord", "--dropout", "0"])]
    for res, args in cases:
        common = ["--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu"]
        r = run_script_here(capsys, "problem2/train.py", *common, "--epochs", "1", *args)
        assert r.returncode == 0, r.stderr
        method = args[1]
        log = [x for x in json.loads((res / "training_log.json").read_text()) if x["model"] == method]
        assert [x["epoch"] for x in log] == [1] and "cpu_s" in log[0]["time"]
        assert run_main(evaluate.main, common) == 0
        m = json.loads((res / "metrics.json").read_text())["methods"][method]
        assert m["config"]["regression_head"] == (args[3] if method == "regression" else "gap")
        # The saved model evaluated by the script gives the numbers logged in training (one evaluation path).
        assert m["metrics"]["pck"] == log[0]["val"]["pck"]
        assert m["val_loss"] == pytest.approx(log[0]["val"]["loss"], rel=1e-6)
        assert m["metrics"]["hand_placement"]["images_apart"] >= 0 and "spread" in m["metrics"]
    assert set(json.loads((shared / "metrics.json").read_text())["methods"]) == {"integral", "simcc", "regression"}
    integral = next(x for x in json.loads((shared / "training_log.json").read_text()) if x["model"] == "integral")
    assert set(integral["train"]) == {"loss", "coord", "divergence"}
    assert {"coord", "divergence"} <= set(integral["val"])
    summary = (shared / "summary.md").read_text()
    assert "Where the hand predictions land" in summary and "soft-argmax" in summary
    assert (shared / "figures" / "pck_curves.png").is_file() and not (shared / "figures" / "failure_cases.png").exists()


# --- the study: plan, runs, generated report ------------------------------------------------------------------------

def test_study_plan():
    assert baseline.AblationConfig().ablations == ["sigma", "resolution", "skip"]  # the default is unchanged
    families, runs, _ = baseline.plan(baseline.AblationConfig(ablations=["regression-head", "regression-long",
                                                                         "methods"]))
    assert len(families["regression-head"]) == 6 and len(runs) == 10  # the specified regression serves two families
    assert families["regression-long"] == ["p2-regression-long"] and runs["p2-regression-long"]["epochs"] == 90
    assert families["methods"] == ["p2-heatmap", "p2-regression", "p2-integral", "p2-simcc"]
    assert {runs[n]["regression_head"] for n in families["regression-head"]} == set(REGRESSION_HEADS)
    assert {runs[n]["model"] for n in runs} == set(METHODS)


def test_study_runs_and_its_report(tiny_data, tmp_path):
    res = tmp_path / "res"
    argv = ["--data-dir", str(tiny_data), "--results-dir", str(res), "--device", "cpu", "--epochs", "1",
            "--ablations", "regression-head", "regression-long", "methods", "--regression-heads", "gap", "coord",
            "--dropouts", "0.5", "--long-factor", "2", "--limit-train", "8", "--no-run-figures"]
    assert run_main(baseline.main, argv) == 0
    abl = json.loads((res / "ablation.json").read_text())
    assert list(abl["families"]) == ["regression-head", "regression-long", "methods"]
    assert len(abl["runs"]) == 6 and abl["runs"]["p2-regression-long"]["epoch"] <= 2
    for name, r in abl["runs"].items():
        assert (res / "study" / name / "seed641" / f"{r['model']}_model.pth").is_file()
        assert r["train_time_s"] > 0 and r["cpu_time_s"] > 0 and len(r["val_pck_by_epoch"]) == r["epochs"]
    assert (res / "figures" / "methods_pck_curves.png").is_file() and not (res / "figures" / "ablation.png").exists()
    assert not list((res / "study").rglob("*.png"))  # --no-run-figures: the runs' numbers only
    summary = (res / "summary.md").read_text()
    assert "## Beyond the specification" in summary and "### What these runs measured" in summary
    spec = abl["runs"]["p2-regression"]["metrics"]
    assert f"reaches PCK@0.05 {spec['pck']['0.05']:.3f}" in summary  # the conclusion quotes the JSON's numbers
    assert run_main(baseline.main, [*argv, "--resume"]) == 0  # finished runs: nothing trained, the same report
    again = json.loads((res / "ablation.json").read_text())
    assert {n: (r["metrics"], r["train_time_s"]) for n, r in again["runs"].items()} == {
        n: (r["metrics"], r["train_time_s"]) for n, r in abl["runs"].items()}


def fake_run(model: str, p05: float, head: float = 0.0, feet: float = 0.0, placement: str | None = None,
             epochs: int = 30, **settings) -> dict:
    """An ``ablation.json`` run with only what :func:`study_conclusion` reads."""
    per_kp = {n: {"pck": {"0.05": head if n == "head" else feet if "foot" in n else p05}} for n in NAMES}
    h = None if placement is None else {"near": 0.05, "apart": 2.0, "images_apart": 50, "one_per_hand": 0.5,
                                        "hand_pck": 0.4, **{k: 0.7 if k == placement else 0.1 for k in
                                                            ("near_one_hand", "near_midpoint", "crossed",
                                                             "elsewhere")}}
    metrics = {"pck": {"0.05": p05}, "mean_px_error": 10 * (1 - p05), "spread": p05, "per_keypoint": per_kp,
               "hand_placement": h}
    return {"model": model, "epochs": epochs, "metrics": metrics, "train_time_s": 60.0, "cpu_time_s": 100.0,
            **settings}


def study(flatten_p05: float, simcc_head: float) -> tuple[dict, list[str]]:
    reg = lambda p, h, d, e=30: fake_run("regression", p, regression_head=h, dropout=d, epochs=e)  # noqa: E731
    runs = {"gap": reg(0.074, "gap", 0.5), "gap0": reg(0.08, "gap", 0.0), "flat": reg(flatten_p05, "flatten", 0.5),
            "flat0": reg(flatten_p05 + 0.05, "flatten", 0.0), "long": reg(0.09, "gap", 0.5, 90),
            "heat": fake_run("heatmap", 0.85, 1.0, 0.99, "near_one_hand", sigma=2.0, heatmap_size=64, skip=True),
            "int": fake_run("integral", 0.8, 0.99, 0.98, "near_midpoint", integral_loss="l1", integral_divergence=1.0),
            "sim": fake_run("simcc", 0.7, simcc_head, 0.99, "crossed", simcc_split_ratio=2.0, simcc_sigma=2.0)}
    return {"epochs": 30, "runs": runs}, list(runs)


def test_study_conclusion_states_the_numbers_and_judges_nothing():
    """One seed per run: the summary states what was measured and leaves every verdict to the study's rule."""
    lines = study_conclusion(*study(flatten_p05=0.6, simcc_head=0.9))
    text = "\n".join(lines)
    assert lines[0].startswith("One seed per run: the numbers below are measurements, not verdicts")
    assert "The specified regression (regression, gap head, dropout 0.5, 30 epochs) reaches PCK@0.05 0.074" in text
    assert "Trained for 90 epochs instead of 30, it reaches 0.090 (+0.016)." in text
    assert "best regression variant is regression, flatten head, dropout 0, 30 epochs at PCK@0.05 0.650 (mean " \
           "error 3.5 px, spread 0.65)." in text
    assert "Without dropout PCK@0.05 changes by +0.028 on average over 2 head(s)" in text
    assert "integral, l1 + 1 x JS, 30 epochs: PCK@0.05 head 0.990, feet 0.980, against the heatmap's 1.000" in text
    assert "70% of the hand predictions near the midpoint" in text and "soft-argmax" in text
    assert "70% of the hand predictions at the x of one hand and the y of the other" in text
    assert "SimCC decodes x and y apart" in text and "it commits" in text
    assert "The 8 runs took 8 min of training and validation (13 min of CPU time)." in text
    # no verdict words of its own: those came from this module's thresholds, which the study's rule replaces
    for word in ("reaches 0.5", "barely", "helps", "below on", "the causes interact", "is not the cause"):
        assert word not in text, word


def test_study_conclusion_lays_out_the_pooling_dropout_grid():
    """The (pooling, dropout) 2x2: both single changes and the joint one, beside their sum, stated as numbers."""
    abl, names = study(flatten_p05=0.109, simcc_head=1.0)
    for name, p in (("gap", 0.074), ("gap0", 0.195), ("flat", 0.109), ("flat0", 0.658)):
        abl["runs"][name]["metrics"]["pck"]["0.05"] = p
    text = "\n".join(study_conclusion(abl, names))
    assert ("From the specification's 0.074: keeping position (regression, flatten head, dropout 0.5, 30 epochs) "
            "changes PCK@0.05 by +0.035, removing dropout (regression, gap head, dropout 0, 30 epochs) by +0.121, "
            "both together (regression, flatten head, dropout 0, 30 epochs) by +0.584; the two single changes add "
            "up to +0.156.") in text
