"""Command-line flags from a config dataclass: one `--field-name` per field, typed from its hint.

Shared by `classic.train` and `lm.train` so that every config field is overridable the same way:
bools get `--flag / --no-flag`, `Literal` fields get choices, and `X | None` fields accept "none".
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any


def _parser_for(kind: Any) -> Callable[[str], Any]:
    """An argparse `type` for a field's type hint: int, float, str, `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(kind) if a is not type(None)]
        parse_inner = _parser_for(inner)

        def parse(text: str) -> Any:
            return None if text.lower() == "none" else parse_inner(text)

        parse.__name__ = f"{getattr(inner, '__name__', inner)} or none"
        return parse
    return kind


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_cls: type,
    aliases: dict[str, str] | None = None,
    default_note: str = "",
) -> None:
    """Add one flag per field of `config_cls`. Defaults are SUPPRESSed: only flags the user gave
    appear in the namespace (see `config_overrides`), so presets can sit between the two."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        kind = hints[field.name]
        flags = ["--" + field.name.replace("_", "-")]
        if aliases and field.name in aliases:
            flags.append(aliases[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": f"default {default}{default_note}",
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        else:
            kwargs["type"] = _parser_for(kind)
            kwargs["metavar"] = field.name.upper()
        parser.add_argument(*flags, **kwargs)


def config_overrides(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The config fields the user set on the command line."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_cls)
        if hasattr(args, f.name)
    }
