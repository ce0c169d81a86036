"""Reading params: the files, their layering, ``--set`` overrides, and errors that teach.

Values are layered in this order, then validated once by the models of
``pipeline.core.config``:

1. the shipped defaults, ``pipeline/defaults.yaml`` (installed with the package; no
   experiment changes it, so a run outside any project never inherits one's leftovers),
2. the project's params.yaml: ./params.yaml, or the file given with ``--params``
   (DVC reads and ``dvc exp run -S`` rewrites this one),
3. ``--set section.key=value`` / typed CLI flags.

The defaults file's comments document every key; ``params_doc`` reads them for ``--help``,
and ``help_value`` gives the value a run from the working directory would use.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.core.config import ConfigError, Params

PARAMS_FILE = "params.yaml"
DEFAULTS_FILE = Path(__file__).resolve().parents[1] / "defaults.yaml"  # package data


def default_params_file() -> Path:
    """The shipped defaults (pipeline/defaults.yaml), never the project's params.yaml."""
    if not DEFAULTS_FILE.is_file():
        raise ConfigError(f"the shipped defaults {DEFAULTS_FILE} are missing: reinstall")
    return DEFAULTS_FILE


@dataclass(frozen=True)
class KeyDoc:
    """One key of params.yaml as its file shows it: the default as written, and its comment."""

    key: str
    default: str
    comment: str


_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w-]+):\s*(?P<value>.*?)\s*(?:#\s?(?P<note>.*))?$")
_MORE = re.compile(r"^(?P<indent> *)#\s?(?P<note>.*)$")


PROJECT_HEADER = """\
# This project's params (`prep params --init` writes this full copy of the shipped defaults,
# pipeline/defaults.yaml, which documents every key). It overrides those defaults key by key;
# DVC reads it (dvc.yaml `params:`, so it keeps every key) and `dvc exp run -S` rewrites it.
# Each stage depends on its own section (and `seed`), so `dvc repro` reruns exactly the stages
# whose parameters changed.
# Override on the command line: `prep augment --set factor=4`, `dvc exp run -S augment.factor=4`.
"""


def project_params_text() -> str:
    """A project's params.yaml to start from: every key of the defaults, with their comments.

    DVC needs every key a stage's ``params:`` names in params.yaml itself (it does not know
    the shipped defaults), so a project starts from the full set rather than an empty file.
    """
    lines = default_params_file().read_text(encoding="utf-8").splitlines(keepends=True)
    body = "".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :])
    return PROJECT_HEADER + body


@cache
def params_doc() -> dict[str, list[KeyDoc]]:
    """Each section's keys (nested ones dotted: ``backends.warp.strength``) with the
    defaults and comments of the shipped defaults file; ``""`` holds the top-level keys.

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


@dataclass(frozen=True)
class HelpValue:
    """The value of one key a run from here would use, and which file set it."""

    text: str  # as YAML writes it in flow style: null, true, [0.5, 0.75]; "" for a mapping
    source: str  # "params.yaml" when ./params.yaml sets it, else "default"


def help_value(section: str, key: str) -> HelpValue | None:
    """``section.key`` (``""``: a top-level key; nested keys dotted) as a run from the working
    directory would use it: ./params.yaml over the shipped defaults. None when unknown.

    Values are read as YAML, not as text, so a params.yaml that DVC rewrote (nulls left blank,
    lists in block style, comments dropped) shows the same values as the file it came from.
    """
    path = [*([section] if section else []), *key.split(".")]
    local = _lookup(_local_raw(), path)
    value = local if local is not _MISSING else _lookup(_defaults_raw(), path)
    if value is _MISSING:
        return None
    text = "" if isinstance(value, dict) else _flow(value)
    return HelpValue(text, PARAMS_FILE if local is not _MISSING else "default")


_MISSING = object()


def _lookup(raw: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(raw, dict) or part not in raw:
            return _MISSING
        raw = raw[part]
    return raw


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()  # a scalar ends its document


@cache
def _defaults_raw() -> dict[str, Any]:
    return _read_yaml(default_params_file())


@cache
def _local_raw() -> dict[str, Any]:
    """./params.yaml as read for help; {} when absent or broken (the run reports that)."""
    try:
        return _read_yaml(Path(PARAMS_FILE)) if Path(PARAMS_FILE).is_file() else {}
    except ConfigError:
        return {}


def keys_missing_from(path: Path, section: str) -> list[str]:
    """The dotted keys of ``section`` (and ``seed``) that the defaults have and ``path`` lacks."""
    local = _read_yaml(path) if path.is_file() else {}
    shipped = _defaults_raw()
    missing = [] if "seed" in local else ["seed"]
    return missing + [
        key for key in _dotted(shipped.get(section, {}), f"{section}.")
        if _lookup(local, key.split(".")) is _MISSING
    ]  # fmt: skip


def _dotted(raw: Any, prefix: str) -> list[str]:
    """Leaf keys of a mapping, dotted (``generate.backends.warp.strength``)."""
    if not isinstance(raw, dict):
        return [prefix.removesuffix(".")]
    return [key for name, value in raw.items() for key in _dotted(value, f"{prefix}{name}.")]


def load_params(
    path: Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Params:
    """Load and validate params: shipped defaults, then ``path`` (or ./params.yaml), then
    overrides."""
    raw = _read_yaml(default_params_file())
    local = path if path is not None else Path(PARAMS_FILE)
    if local.is_file():
        raw = _deep_merge(raw, _read_yaml(local))
    elif path is not None:
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
