"""The options the commands share, and help text that quotes the params.

A typed flag overrides one params key; its help ends with the value a run from the working
directory would use (./params.yaml over the shipped defaults), and a stage command's epilog
lists its whole section with the defaults file's comments, so ``--help`` never disagrees
with what runs.
Option types are ``Annotated`` aliases, or functions that build one, so that a command
declares an option in one line: ``out: opt.option(Path, "help") = Path("data/x")``, or a
flag for a params key: ``min_prob: DETECT.flag(float, "min_prob", "help") = None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.params import help_value, params_doc

DEVICES = "auto | cpu | cuda | cuda:N | mps"


_PLACEHOLDER = re.compile(r"<([\w.-]*)>")


def markup_safe(text: str) -> str:
    """Help text as typed, through the app's markdown: ``raw/<class>/`` would otherwise lose
    ``<class>`` as an HTML tag. Placeholders are escaped outside `code spans` (inside
    them, markdown keeps text as it is)."""
    parts = text.split("`")
    parts[::2] = [_PLACEHOLDER.sub(r"\\<\1\\>", part) for part in parts[::2]]
    return "`".join(parts)


def argument(kind: Any, text: str) -> Any:
    """A positional argument of type ``kind`` (its default is the parameter's)."""
    return Annotated[kind, typer.Argument(help=markup_safe(text))]


def option(kind: Any, text: str, *decls: str) -> Any:
    """An option of type ``kind``; ``decls`` name it where the parameter's name would not."""
    return Annotated[kind, typer.Option(*decls, help=markup_safe(text))]


ParamsOpt = option(
    Path | None, "params.yaml to use (default: ./params.yaml over the defaults)", "--params"
)


def set_option(example: str) -> Any:
    """``--set/-s``, with an example from the stage's own params section."""
    text = f"Override a param (repeatable): -s {example}, or -s section.key=value"
    return option(list[str] | None, text, "--set", "-s")


SetOpt = set_option("seed=1")
ReportOpt = option(
    Path | None,
    "Where to write the stage summary JSON (a DVC metric). Run times and speed are printed, "
    "and kept in reports/runtime/ beside the pipeline's own reports/<stage>.json",
)


def flag_help(section: str, key: str, text: str) -> str:
    """A typed flag's help, ending with the value a run from here would use, and its file."""
    value = help_value(section, key)
    return f"{text} [{value.source}: {value.text}]" if value and value.text else text


@dataclass(frozen=True)
class Section:
    """The typed flags of one params.yaml section (``""``: the top-level keys, e.g. seed)."""

    name: str

    def flag(self, kind: type, key: str, text: str, *decls: str) -> Any:
        """A flag for ``key`` (unset: params.yaml decides), its default at the end of its help."""
        return option(kind | None, flag_help(self.name, key, text), *decls)

    def device(self) -> Any:
        """``--device`` of a stage that runs a network."""
        return self.flag(str, "device", DEVICES)


SeedOpt = Section("").flag(int, "seed", "Seed")
EngineOpt = option(
    str | None,
    "Where the per-image work runs: local (this machine's processes) or ray (a Ray cluster: "
    "RAY_ADDRESS, else a local instance). Not a param: outputs are identical "
    "[default: $PREP_ENGINE, else local]",
    "--engine",
)


def params_epilog(section: str) -> str:
    """Every key of the stage's params section, the value a run from here would use and the
    defaults file's comment."""
    rows = "\n".join(
        f"| {k.key} | {_cell(_shown(section, k.key))} | {_cell(k.comment)} |"
        for k in params_doc().get(section, [])
    )
    return (
        f"**params.yaml `{section}`** (./params.yaml over the shipped defaults), each one "
        f"overridable here with `-s key=value` "
        f"(or under DVC with `dvc exp run -S {section}.key=value`):\n\n"
        f"| key | value | what it does |\n|---|---|---|\n{rows}"
    )


def _shown(section: str, key: str) -> str:
    value = help_value(section, key)
    if value is None:
        return "(not set)"
    return value.text or "(a mapping)"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("`", "")
