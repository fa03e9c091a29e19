"""Problem 2: keypoints by heatmaps vs direct regression, with sub-pixel targets/decoding, PCK and ablations.

A method is a model plus a codec. ``config.py`` holds the one config dataclass (defaults equal the specification);
``codec.py`` the pixel convention and one codec per output representation (``HeatmapCodec``, ``RegressionCodec``:
``encode`` keypoints to targets, ``decode`` outputs to image pixels), with the Gaussian rendering and peak decoding
(DARK, joint hand decoding) in ``heatmaps.py``; ``dataset.py`` reads the data and builds targets with the codec;
``model.py`` the two networks and their builder; ``loss.py`` the criterion and its builder; ``train.py`` the
training script (and the optimizer builder); ``evaluate.py`` the one evaluation path and the evaluation script;
beside it ``metrics.py`` (PCK, AUC, hand-ambiguity ceiling, swap invariance, failure groups), ``figures.py`` and
``report.py`` (``summary.md``); ``baseline.py`` the heatmap ablations.
"""
