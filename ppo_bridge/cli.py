"""What every command line shares: flags from a config dataclass, and the one-line error ending.

`add_config_arguments` gives one `--field-name` per field, typed from its hint, so every config
field is overridable the same way: bools get `--flag / --no-flag`, `Literal` fields get choices,
and `X | None` fields accept "none". `run_command` ends every CLI alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

# what a user can fix: bad flags, files, data; a non-finite loss (lower the learning rate)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


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
    choices: dict[str, list[str]] | None = None,
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
        elif choices and field.name in choices:  # shown, and left to the config to check:
            kwargs["metavar"] = "{" + ",".join(choices[field.name]) + "}"  # a bad one is one line
            kwargs["type"] = str
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


def first_line(err: BaseException) -> str:
    """An exception's message, first line only (its type's name if it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def run_command(
    body: Callable[[], dict[str, Any] | None],
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """The end of every command: run `body` and print the summary it returns as the last stdout
    line (JSON; None prints nothing, e.g. on a process other than the main one). An error the user
    can fix (`errors`) becomes one `error: ...` line on stderr and exit status 2, never a
    traceback; open progress bars are closed first, so that line starts a line and is the last."""
    try:
        summary = body()
    except errors as err:
        from tqdm.auto import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary))
    return 0
