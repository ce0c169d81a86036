"""Reading params: the files, their layering, ``--set`` overrides, and errors that teach.

Values are layered in this order, then validated once by the models of
``pipeline.core.config``:

1. the project's params.yaml (the repo root, or the copy installed with the package),
2. a params.yaml in the working directory, when it is a different file,
3. ``--set section.key=value`` / typed CLI flags.

params.yaml's own comments document every key; ``params_doc`` reads them for ``--help``.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.core.config import ConfigError, Params

PARAMS_FILE = "params.yaml"


def default_params_file() -> Path:
    """The params.yaml shipped with the project: repo root, else the installed copy."""
    candidates = [
        Path(__file__).resolve().parents[2] / PARAMS_FILE,
        Path(sys.prefix) / "share" / "fewshot-prep" / PARAMS_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no default {PARAMS_FILE} found (looked in {candidates})")


@dataclass(frozen=True)
class KeyDoc:
    """One key of params.yaml as its file shows it: the default as written, and its comment."""

    key: str
    default: str
    comment: str


_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w-]+):\s*(?P<value>.*?)\s*(?:#\s?(?P<note>.*))?$")
_MORE = re.compile(r"^(?P<indent> *)#\s?(?P<note>.*)$")


@cache
def params_doc() -> dict[str, list[KeyDoc]]:
    """Each section's keys (nested ones dotted: ``backends.warp.strength``) with the
    defaults and comments of the default params.yaml; ``""`` holds the top-level keys.

    The file's comments are the documentation of every param, so `--help` shows them as
    written rather than a second copy that could drift.
    """
    sections: dict[str, list[KeyDoc]] = {"": []}
    stack: list[tuple[int, str]] = []  # the keys enclosing the current line, with indents
    last: tuple[list[KeyDoc], int] | None = None  # the key a comment may continue
    for line in default_params_file().read_text(encoding="utf-8").splitlines():
        if (more := _MORE.match(line)) and last is not None:
            keys, indent = last
            if len(more.group("indent")) > indent + 2:  # aligned far right: a continuation
                doc = keys[-1]
                keys[-1] = KeyDoc(doc.key, doc.default, f"{doc.comment} {more['note']}".strip())
            continue
        if not (match := _LINE.match(line)):
            continue
        indent, key, value = len(match["indent"]), match["key"], match["value"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if indent == 0 and not value:
            sections.setdefault(key, [])  # a section
            last = None
            continue
        keys = sections[""] if indent == 0 else sections[path[0]]
        dotted = key if indent == 0 else ".".join(path[1:])
        keys.append(KeyDoc(dotted, value, match["note"] or ""))
        last = (keys, indent)
    return sections


def default_of(section: str, key: str) -> str:
    """``key``'s default in params.yaml as written, or "" when it is not there."""
    return next((k.default for k in params_doc().get(section, []) if k.key == key), "")


def load_params(
    path: Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Params:
    """Load and validate params: defaults, then ``path`` (or ./params.yaml), then overrides."""
    raw = _read_yaml(default_params_file())
    local = path if path is not None else Path(PARAMS_FILE)
    if local.is_file() and local.resolve() != default_params_file().resolve():
        raw = _deep_merge(raw, _read_yaml(local))
    elif path is not None and not local.is_file():
        raise ConfigError(f"params file {path} does not exist")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate(raw)


def validate(raw: dict[str, Any]) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, raw)) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["augment.factor=4", "split.train_fraction=null"]`` -> typed dict (YAML scalars)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return parsed


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            sections = [k for k, v in node.items() if isinstance(v, dict)]
            raise ConfigError(
                f"unknown params key {dotted!r}: {part!r} is not a section"
                f"{_did_you_mean(part, sections)}"
            )
        node = child
    node[leaf] = value


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _describe(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = [f"invalid parameters ({err.error_count()} problem(s)):"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "missing":
            lines.append(f"  {key}: missing from {PARAMS_FILE}")
            continue
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggest_key(problem['loc'])}")
            continue
        got = problem.get("input")
        shown = "" if isinstance(got, dict) else f" = {got!r}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}{shown}: {message}{_allowed(problem['loc'])}")
    return "\n".join(lines)


def _suggest_key(loc: tuple[Any, ...]) -> str:
    """A close, valid key of the same section, for a key the models do not know."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return _did_you_mean(str(loc[-1]), list(model.model_fields))


def _allowed(loc: tuple[Any, ...]) -> str:
    """Describe the allowed range of a field from its declared constraints."""
    model: type[BaseModel] = Params
    field = None
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            break
        field = model.model_fields[part]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    if field is None:
        return ""
    bounds = []
    for meta in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, name, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, name)}")
    hint = f" (allowed: {', '.join(bounds)})" if bounds else ""
    if field.description:
        hint += f" [{field.description}]"
    return hint
