"""Problem 2: keypoints by heatmaps vs direct regression, with sub-pixel targets/decoding, PCK and ablations."""
