"""Reading user data with one-line errors: JSON annotation files and images decoded once into memory."""
from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import UserError


def load_json(path: str | Path, required_keys: Iterable[str] = ()) -> dict:
    """Parse an annotation file; a missing file, invalid JSON or a missing key is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    except RecursionError:  # "[[[[...": valid JSON nested deeper than Python's parser goes
        raise UserError(f"{path}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object at the top level, got {type(obj).__name__}")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        raise UserError(f"{path}: missing required key(s) {', '.join(missing)}")
    return obj


def require_dir(path: str | Path, what: str = "images folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found")
    return path


def load_images(image_dir: Path, file_names: list[str], size: int, mode: str, annotation_file: Path) -> np.ndarray:
    """Decode every image once into one uint8 array ``[N, H, W, C]`` (C=3 for RGB, 1 for L).

    A missing or unreadable file is an error naming it. A harmless mismatch (another mode) is
    converted with a note on stderr; a wrong size is an error because the boxes/keypoints would no
    longer line up with the pixels.
    """
    channels = 3 if mode == "RGB" else 1
    out = np.empty((len(file_names), size, size, channels), dtype=np.uint8)
    converted = 0
    for i, name in enumerate(file_names):
        path = image_dir / name
        if not path.is_file():
            raise UserError(f"{path}: image listed in {annotation_file} not found")
        try:
            # Image.open reads only the header, so a wrong size is rejected before any pixel is decoded
            # (a small PNG can declare 30000x30000 and decode to gigabytes).
            with warnings.catch_warnings():  # a large declared size warns here; it is rejected just below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(path)
            with im:
                if im.size != (size, size):
                    raise UserError(f"{path}: image is {im.size[0]}x{im.size[1]}, expected {size}x{size}")
                im.load()
                if im.mode != mode:
                    im = im.convert(mode)
                    converted += 1
                arr = np.asarray(im)
        except Image.DecompressionBombError as e:  # raised by Image.open itself for a huge declared size
            raise UserError(f"{path}: refused as a decompression bomb ({e})") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UserError(f"{path}: unreadable or truncated image ({e})") from None
        out[i] = arr.reshape(size, size, channels)
    if converted:
        print(f"note: converted {converted} image(s) in {image_dir} to mode {mode}", file=sys.stderr)
    return out


def ensure_data(data_dir: str | Path, is_default: bool, dataset: str) -> None:
    """Generate the reference data (both datasets, seed 641) when ``data_dir`` holds neither a ``dataset`` folder
    (``'detection'`` or ``'keypoints'``) nor is such a folder itself, and is the default folder or missing/empty.

    Any other folder without data is left alone, so pointing ``--data-dir`` at a wrong place is an error that
    names the missing file, not a silent generation somewhere unexpected. A ``data_dir`` that is a file is an error.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir}: is a file, not a folder")
    if (data_dir / dataset).exists() or (data_dir / "train_annotations.json").exists():  # or the dataset folder itself
        return
    empty = not data_dir.exists() or not any(p.name != "README.md" for p in data_dir.iterdir())
    if is_default or empty:
        from common.synthetic import generate

        # Only the missing dataset where the other is there: that one may be the user's own, never overwritten.
        other = {"detection": "keypoints", "keypoints": "detection"}[dataset]
        only = dataset if (data_dir / other).exists() else None
        print(f"no {dataset} data in {data_dir}: generating the reference "
              f"{'dataset' if only else 'datasets'} there (1000/200 images, seed 641)")
        generate(data_dir, only=only)
