"""Problem 1: a multi-scale single-shot detector for circles, squares and triangles.

``dataset.py`` reads the data, ``model.py`` holds :class:`MultiScaleDetector`, ``utils.py`` the box and
anchor math, ``loss.py`` the criterion, ``train.py`` and ``evaluate.py`` the two scripts; ``config.py``
holds the one config dataclass whose defaults equal the specification.
"""
