"""Command-line options generated from the config dataclasses, so the `collm` command can never drift from them.

Every field becomes an option named after it (`max_steps` -> `--max-steps`); a nested dataclass (StageConfig.llm)
is flattened into its fields (`--lora-r`), a nested name that clashes with another field's taking its parent's name
as prefix (`--llm-seed`, were LLMConfig to get a seed). Types: int, float, str; bool as `--flag / --no-flag`;
`X | None` also takes "none"; tuple[X, ...] takes one or more values. The help text is the field's comment in the
class source; the defaults shown are the profiles' (collm_lib/profiles.py), which only the options given override.
--help shows the options in sections (argparse's argument groups: Section), each option in the one its field names
(config_options' `sections`), so the options of every command that takes a config read the same.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
from dataclasses import dataclass
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from .rules import ConfigError
from .settings import PROFILES


@dataclass(frozen=True)
class Option:
    """One generated option: its flag, the field path it sets (("llm", "lora_r")), the field's type and help, and
    the key of the --help section it shows in (add_sections)."""

    flag: str
    path: tuple[str, ...]
    hint: Any
    comment: str
    section: str = ""


@dataclass(frozen=True)
class Section:
    """A --help section (an argparse argument group): its title and one line on what its options configure."""

    title: str
    description: str


def add_sections(parser: argparse.ArgumentParser, sections: dict[str, Section]) -> dict[str, Any]:
    """{key: the parser's argument group of each of `sections`}, made in `sections`' order, which --help keeps."""
    return {key: parser.add_argument_group(s.title, s.description) for key, s in sections.items()}


def field_comments(cls: type) -> dict[str, str]:
    """{field: its comment in the class source}: the comment lines right above the field, the comment after it on
    its last line, and comment-only lines following that one (a trailing comment continued); "" when none."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whether code precedes it on the line)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.string.lstrip("#").strip(), bool(token.line[:token.start[1]].strip()))
    nodes = [n for n in ast.parse(source).body[0].body
             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    above: dict[str, list[str]] = {}
    claimed: set[int] = set()
    for node in nodes:
        line, block = node.lineno - 1, []
        while line in comments and not comments[line][1]:
            block.insert(0, comments[line][0])
            claimed.add(line)
            line -= 1
        above[node.target.id] = block
    result = {}
    for node in nodes:
        parts = list(above[node.target.id])
        text, trailing = comments.get(node.end_lineno, ("", False))
        if trailing:
            parts.append(text)
            line = node.end_lineno + 1
            while line in comments and not comments[line][1] and line not in claimed:
                parts.append(comments[line][0])
                line += 1
        result[node.target.id] = " ".join(parts)
    return result


def _leaves(cls: type, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, str]]:
    hints, comments = get_type_hints(cls), {}
    for base in reversed(cls.__mro__):  # a field's comment sits in the class that declares it
        if dataclasses.is_dataclass(base):
            comments |= field_comments(base)
    found = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            found += _leaves(hint, path + (f.name,))
        else:
            found.append((path + (f.name,), hint, comments[f.name]))
    return found


def config_options(cls: type, prefix: str = "", exclude: tuple[str, ...] = (),
                   sections: dict[str, str] | None = None, section: str = "") -> list[Option]:
    """The options of every field of `cls` (nested dataclasses flattened) but the top-level fields in `exclude`,
    flags prefixed with `prefix` ("mf-": --mf-dim). `sections` {field: section key} places options in --help: a
    field's dotted path ("llm.lora_r"), else its top-level name ("llm": all of LLMConfig's fields); the others go
    to `section`."""
    sections = sections or {}
    leaves = [leaf for leaf in _leaves(cls) if leaf[0][0] not in exclude]
    named = {".".join(path[:end]) for path, _, _ in _leaves(cls) for end in (1, len(path))}
    if set(sections) - named:  # a misspelt field would leave its option in `section` unnoticed
        raise ValueError(f"{cls.__name__}: sections name no field: {sorted(set(sections) - named)}")
    counts: dict[str, int] = {}
    for path, _, _ in leaves:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    options = []
    for path, hint, comment in leaves:
        try:
            argument_kwargs(hint)
        except TypeError as err:  # a field no option can set: say so now, not by a missing option
            raise TypeError(f"{cls.__name__}.{'.'.join(path)}: {err}") from None
        # a clash keeps the top-level field's short name; the nested one carries its parent's name
        name = "_".join(path) if counts[path[-1]] > 1 and len(path) > 1 else path[-1]
        placed = sections.get(".".join(path), sections.get(path[0], section))
        options.append(Option(f"--{prefix}{name.replace('_', '-')}", path, hint, comment, placed))
    flags = [o.flag for o in options]
    if len(set(flags)) != len(flags):
        raise ValueError(f"{cls.__name__}: generated flags clash: {sorted(f for f in flags if flags.count(f) > 1)}")
    return options


def _nullable(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__}-or-none"  # argparse names it in "invalid int-or-none value"
    return parse


def argument_kwargs(hint: Any) -> dict[str, Any]:
    """add_argument's type / action / nargs / metavar for a field type; TypeError for a type without a form."""
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    if optional:
        rest = [a for a in get_args(hint) if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else Union[tuple(rest)]
    if hint is bool and not optional:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": _nullable(hint) if optional else hint, "metavar": hint.__name__.upper() + ("|none" * optional)}
    args = get_args(hint)
    if get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str) \
            and not optional:
        return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
    raise TypeError(f"no command-line form for the field type {hint!r}")


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def _value(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def profile_defaults(option: Option, variants: Callable[[str], list[Any]]) -> str:
    """The option's defaults per profile, e.g. "smoke 4, cpu 40, gpu 2400 / 800" (`variants(profile)`: the configs
    the command may build, e.g. stage 1 and stage 2), or one value when all profiles agree."""
    per = {p: " / ".join(dict.fromkeys(_shown(_value(c, option.path)) for c in variants(p))) for p in PROFILES}
    if len(set(per.values())) == 1:
        return next(iter(per.values()))
    return ", ".join(f"{p} {v}" for p, v in per.items())


def add_config_arguments(groups: dict[str, Any], options: list[Option], dest: str,
                         variants: Callable[[str], list[Any]], custom: dict[str, dict[str, Any]] | None = None) -> None:
    """Add `options`, each to the argument group of its section (`groups`: add_sections' answer); a given option
    lands in the namespace as "<dest>:<field.path>" (absent otherwise: argparse.SUPPRESS), for overrides().
    `custom` changes add_argument's keywords per field name; its "help" replaces the field's comment, before the
    profile defaults, which a required option does not show (it has none)."""
    for option in options:
        if option.section not in groups:  # a section the command did not make: an error, not a lost option
            raise ValueError(f"{option.flag}: no --help section {option.section!r} among {sorted(groups)}")
        changes = dict((custom or {}).get(option.path[-1], {}))
        text = changes.pop("help", option.comment)
        if not changes.get("required"):
            text = f"{text} [profile default: {profile_defaults(option, variants)}]".strip()
        kwargs = argument_kwargs(option.hint) | {"default": argparse.SUPPRESS, "help": text.replace("%", "%%"),
                                                 "dest": f"{dest}:{'.'.join(option.path)}"}  # help is %-formatted
        groups[option.section].add_argument(option.flag, **kwargs | changes)


def overrides(args: argparse.Namespace, dest: str) -> dict[tuple[str, ...], Any]:
    """{field path: value} of the options given on the command line for the group `dest`."""
    given = {}
    for key, value in vars(args).items():
        if key.startswith(f"{dest}:"):
            given[tuple(key.split(":", 1)[1].split("."))] = tuple(value) if isinstance(value, list) else value
    return given


def apply(config: Any, changes: dict[tuple[str, ...], Any]) -> Any:
    """`config` with the fields at the given paths replaced (nested dataclasses too). A value the config refuses
    (its __post_init__: rules.check_config) raises ConfigError, its `path` the field's full path here."""
    top = {path[0]: value for path, value in changes.items() if len(path) == 1}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in changes.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, inner in nested.items():
        try:
            top[name] = apply(getattr(config, name), inner)
        except ConfigError as err:
            err.path = (name, *err.path)  # the nested config knows its field, not where it sits
            raise
    return dataclasses.replace(config, **top)
