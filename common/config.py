"""Config dataclass -> CLI flags, in one place for both problems.

Each field becomes ``--field-name`` (underscores to dashes) with the dataclass default, so the
specification defaults live in exactly one spot: the problem's config dataclass. Field metadata may
carry ``help``, ``choices`` and bounds (``min`` for >=, ``gt`` for >, ``lt`` for <) that are checked with a
one-line error instead of a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from common.errors import UserError

C = TypeVar("C")


def cfg_field(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with CLI help and optional ``choices``/``min``/``gt``/``lt`` metadata."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type[C]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        typ = hints[f.name]
        kwargs: dict[str, Any] = {"help": f.metadata.get("help", ""), "default": default, "dest": f.name}
        if typ is bool or typ == bool | None:  # bool | None: None when neither --x nor --no-x is given
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            origin = typing.get_origin(typ)
            args = [a for a in typing.get_args(typ) if a is not type(None)]
            if origin is list:
                kwargs["nargs"] = "+"
                kwargs["type"] = args[0]
            elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
                kwargs["type"] = args[0]  # Optional[X]
            else:
                kwargs["type"] = typ
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(_flag(f.name), **kwargs)


def validate_config(cfg: Any) -> None:
    """Check the ``min``/``gt``/``lt`` bounds in field metadata; raise a one-line :class:`UserError`."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None:
                continue
            if "min" in f.metadata and v < f.metadata["min"]:
                raise UserError(f"{_flag(f.name)} must be >= {f.metadata['min']} (got {v})")
            if "gt" in f.metadata and not v > f.metadata["gt"]:
                raise UserError(f"{_flag(f.name)} must be > {f.metadata['gt']} (got {v})")
            if "lt" in f.metadata and not v < f.metadata["lt"]:
                raise UserError(f"{_flag(f.name)} must be < {f.metadata['lt']} (got {v})")


def parse_config(cls: type[C], argv: list[str] | None = None, description: str = "",
                 parser: argparse.ArgumentParser | None = None) -> tuple[C, argparse.Namespace]:
    """Build the parser from ``cls``, parse ``argv`` and return ``(config, namespace)``.

    Extra, non-config flags may be pre-added to ``parser``; they come back in the namespace.
    """
    parser = parser or argparse.ArgumentParser(description=description,
                                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(parser, cls)
    ns = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(cls)}
    cfg = cls(**{k: v for k, v in vars(ns).items() if k in names})
    validate_config(cfg)
    return cfg, ns


def config_from_dict(cls: type[C], d: dict) -> C:
    """Rebuild a config saved in a checkpoint, ignoring keys this version no longer has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
