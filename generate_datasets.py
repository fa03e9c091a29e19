#!/usr/bin/env python3
"""Generate the synthetic detection and keypoint datasets of the study.

The algorithm (``common/synthetic.py``) reproduces the course's reference data bit for bit.

Usage::

    python generate_datasets.py                      # both datasets, reference defaults
    python generate_datasets.py --only keypoints --num_train 64 --num_val 16 --output_dir /tmp/d
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python generate_datasets.py`: make `common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common.cli import require_output_dir  # noqa: E402
from common.errors import UserError, run_cli  # noqa: E402
from common.synthetic import generate  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output_dir", default="./datasets", help="where detection/ and keypoints/ are written")
    p.add_argument("--num_train", type=int, default=1000, help="training images per dataset")
    p.add_argument("--num_val", type=int, default=200, help="validation images per dataset")
    p.add_argument("--seed", type=int, default=641, help="seed of the single random stream")
    p.add_argument("--only", choices=["detection", "keypoints"], default=None,
                   help="write one dataset only (the other's random draws are still consumed)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        raise UserError(f"--num_train and --num_val must be >= 0 (got {args.num_train}, {args.num_val})")
    if not 0 <= args.seed < 2**32:  # numpy.random.seed's range, which the generator seeds like the reference
        raise UserError(f"--seed must be between 0 and 2**32 - 1 (got {args.seed})")
    require_output_dir(args.output_dir, "--output_dir")
    out = generate(args.output_dir, args.num_train, args.num_val, args.seed, args.only)
    print(f"wrote datasets to {out.resolve()}")


if __name__ == "__main__":
    run_cli(main)
