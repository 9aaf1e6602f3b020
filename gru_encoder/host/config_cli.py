"""Command-line flags generated from a config dataclass: one definition of every default."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def _flag_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field's annotation: int, float, str, bool or `X | None`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--field-name` flag per dataclass field (defaults shown in --help)."""
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, optional = _flag_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        # default=SUPPRESS: only flags given on the command line show up, so presets can sit under them.
        common = dict(default=argparse.SUPPRESS, help=field.metadata.get("help", " "))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif optional:
            parser.add_argument(flag, type=lambda s, k=kind: None if s.lower() == "none" else k(s), **common)
        else:
            parser.add_argument(flag, type=kind, **common)
    return parser


def config_from_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    presets: dict[str, dict[str, Any]] | None = None,
) -> T:
    """Build `cls` from flags. `presets` maps a bool field (e.g. "smoke") to the values it switches to;
    flags given explicitly still win over a preset."""
    given = vars(build_parser(cls).parse_args(argv))
    values: dict[str, Any] = {}
    for name, preset in (presets or {}).items():
        if given.get(name):
            values.update(preset)
    values.update(given)
    return cls(**values)
