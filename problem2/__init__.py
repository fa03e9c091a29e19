"""Problem 2: keypoints by heatmaps vs direct regression, with sub-pixel targets/decoding, PCK and ablations, and
beyond the specification the regression variants and two coordinate heads (integral regression, SimCC).

A method is a model plus a codec plus a criterion. ``config.py`` holds the one config dataclass (defaults equal
the specification) and the methods; ``codec.py`` the pixel convention and one codec per output representation
(``HeatmapCodec``, ``RegressionCodec``, ``IntegralCodec``, ``SimCCCodec``: ``encode`` keypoints to targets,
``decode`` outputs to image pixels), with the Gaussian rendering, peak decoding (DARK, joint hand decoding),
soft-argmax and 1-D peaks in ``heatmaps.py``; ``dataset.py`` reads the data and builds targets with the codec;
``model.py`` the networks and their builder; ``loss.py`` the criteria and their builder; ``train.py`` the
training script (and the optimizer builder); ``evaluate.py`` the one evaluation path and the evaluation script;
beside it ``metrics.py`` (PCK, AUC, hand-ambiguity ceiling, swap invariance, hand placement, spread, failure
groups), ``figures.py`` and ``report.py`` (``summary.md``); ``baseline.py`` the heatmap ablations and the study
beyond the specification.
"""
