"""Problem 1: a multi-scale single-shot detector for circles, squares and triangles.

``config.py`` holds the one config dataclass whose defaults equal the specification; ``dataset.py`` reads the
data; ``model.py`` the detector and its builder; ``utils.py`` the box and anchor math; ``loss.py`` the criterion
and its builder; ``train.py`` the training script; ``evaluate.py`` the one evaluation path, decoding and the
evaluation script; beside it ``metrics.py`` (COCO-exact AP and its variants), ``analysis.py`` (anchor coverage,
scale specialisation, false positives), ``figures.py`` and ``report.py`` (``summary.md``).
"""
