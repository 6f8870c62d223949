"""The configuration reference page, generated from the settings models themselves
(`TrainConfig` and every section it holds) and the built-in scenarios' factories, so a key,
type or default on the page can never differ from what `train` accepts.

>>> dict(all_keys())["grpo.scale_rewards"].default                     # doctest: +SKIP
True
>>> config_reference().splitlines()[0]                                 # doctest: +SKIP
'# Configuration reference'
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from multiagent_rl.config import MOVED_KEYS, STREAM_SETTINGS, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
ITEM = "[]"  # marks the fields of each item of a list of sections: rollout.branching[].step
BOUNDS = (
    (annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"),
)


# ----- the walk over the models ----------------------------------------------------------


def section_model(info: FieldInfo) -> tuple[type[BaseModel], str] | None:
    """The settings model a field holds and how: ("", the model) for a section of its own,
    (ITEM, the model) for a list of them; None for a plain value."""
    annotation, suffix = _without_none(info.annotation), ""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
        suffix = ITEM
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, suffix
    return None


def all_keys(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Every key of `model`, dotted, with its field, in declaration order: a section's own key
    comes just before its keys, and a list of sections' items as `key[].field`.

    >>> [key for key, _ in all_keys()][:3]                             # doctest: +SKIP
    ['scenario', 'scenario_options', 'model']
    """
    keys = []
    for name, info in model.model_fields.items():
        key = prefix + name
        keys.append((key, info))
        nested = section_model(info)
        if nested is not None:
            inner, suffix = nested
            keys += all_keys(inner, f"{key}{suffix}.")
    return keys


def is_section(info: FieldInfo) -> bool:
    """A field set key by key (`grpo.lr`), shown as a table of its own rather than a row."""
    nested = section_model(info)
    return nested is not None and nested[1] == ""


# ----- one row: type, default, description -------------------------------------------------


def _without_none(annotation: Any) -> Any:
    """X for `X | None`, else the annotation unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def readable_type(annotation: Any) -> str:
    """`int`, `float | None`, `'hf' | 'vllm'`, `list[str]`: as a user would write the value."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [readable_type(a) for a in args if a is not type(None)]
        return " | ".join(parts + ["None"] * (type(None) in args))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(readable_type(a) for a in args)}]"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def _number(value: float) -> str:
    # Bounds such as the seed's 2**32 read better as the power they are.
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(key: str, info: FieldInfo) -> list[str]:
    """The field's constraints as `>= 1`, `< 1`; a kind this page cannot show stops the build
    rather than leaving a limit off the page."""
    shown = []
    for item in info.metadata:
        matches = [f"{sign} {_number(getattr(item, attr))}" for kind, attr, sign in BOUNDS if isinstance(item, kind)]
        if not matches:
            raise ValueError(f"config key {key!r}: constraint {item!r} has no rendering; add its kind to BOUNDS")
        shown += matches
    return shown


def type_text(key: str, info: FieldInfo) -> str:
    """`int >= 1`, `float > 0 | None`: the type with its bounds."""
    text, limits = readable_type(info.annotation), ", ".join(bounds(key, info))
    if not limits:
        return text
    if text.endswith(" | None"):  # the bounds are the number's, not None's
        return f"{text.removesuffix(' | None')} {limits} | None"
    return f"{text} {limits}"


def default_text(info: FieldInfo) -> str:
    """The default as it would be written in a YAML config file: `null`, `true`, `[tensorboard]`."""
    value = info.get_default(call_default_factory=True)
    return "required" if value is PydanticUndefined else yaml_text(value)


def yaml_text(value: Any) -> str:
    """`value` on one line, as YAML writes it."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return dumped.removesuffix("...").strip()  # a bare scalar's end-of-document marker


def prose(text: str) -> str:
    """Text for a table cell: no line breaks, and outside `code` spans no pipe, `*` or `<`
    that Markdown would take for a column, emphasis or a tag."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside code spans
        parts[i] = parts[i].replace("|", "\\|").replace("*", "\\*").replace("<", "&lt;")
    return "`".join(parts)


def row(key: str, info: FieldInfo) -> str:
    return (f"| `{key}` | `{type_text(key, info)}` | `{default_text(info)}` | "
            f"{prose(info.description or '')} |")


# ----- the tables --------------------------------------------------------------------------


def settings_tables(model: type[BaseModel] = TrainConfig) -> list[str]:
    """Markdown lines: a table of `model`'s own keys, then one per section it holds (`## grpo`),
    each headed by the section's description."""
    fields = dict(all_keys(model))
    sections: dict[str, list[str]] = {"": []}  # section key -> its rows; "" is the top level
    for key, info in fields.items():
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        nested = section_model(info)
        if nested is not None:
            sections.setdefault(key + nested[1], [])
        if not is_section(info):
            sections[parent].append(row(key, info))
    lines = []
    for section, rows in sections.items():
        if section:
            lines += [f"## {section}", "", _section_intro(section, fields), ""]
        else:
            lines += ["## Top-level keys", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|", *rows, ""]
    return lines


def _section_intro(section: str, fields: dict[str, FieldInfo]) -> str:
    if not section.endswith(ITEM):
        return prose(fields[section].description or "")
    key = section.removesuffix(ITEM)
    model, _ = section_model(fields[key])
    what = " ".join((model.__doc__ or "").split())  # a model's docstring says what one item is
    return prose(f"Each item of `{key}`: {what}")


# ----- the built-in scenarios' options -----------------------------------------------------


def scenario_options() -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """{scenario: (what it is, [(option, type, default), ...])} for every `scenarios/*.py`
    with a `make_scenario`. Read from the source, not imported: a scenario module imports its
    game engine (PettingZoo, OpenSpiel), which a docs build need not have."""
    found = {}
    for path in sorted(SCENARIOS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        factory = next((node for node in tree.body if isinstance(node, ast.FunctionDef)
                        and node.name == "make_scenario"), None)
        if factory is None:
            continue
        summary = " ".join((ast.get_docstring(tree) or "").split())
        summary = re.split(r"(?<=\.)\s", summary, maxsplit=1)[0]  # the first sentence
        notes = (ast.get_docstring(factory) or "").split("\n", 1)[1:]  # below the one-line summary
        if notes:
            summary += " " + " ".join(notes[0].split())
        found[path.stem] = (summary, _options(factory))
    return found


def _options(factory: ast.FunctionDef) -> list[tuple[str, str, str]]:
    params = factory.args
    positional = params.posonlyargs + params.args
    defaults = [None] * (len(positional) - len(params.defaults)) + params.defaults
    pairs = [*zip(positional, defaults, strict=True), *zip(params.kwonlyargs, params.kw_defaults, strict=True)]
    options = []
    for arg, default in pairs:
        kind = ast.unparse(arg.annotation) if arg.annotation is not None else "Any"
        if default is None:
            shown = "required"
        else:
            try:
                shown = yaml_text(ast.literal_eval(default))
            except ValueError:  # not a literal: shown as the code says it
                shown = ast.unparse(default)
        options.append((arg.arg, kind, shown))
    return options


def _scenario_lines() -> list[str]:
    lines = ["## Scenario options", "",
             "`scenario_options.NAME` passes the keyword NAME to the scenario's factory "
             "(`--set scenario_options.solvers=3`). The built-in scenarios' options, from the "
             "signatures of their `make_scenario` in `scenarios/`:", ""]
    for name, (summary, options) in scenario_options().items():
        lines += [f"### {name}", "", prose(summary), ""]
        if not options:
            lines += ["No options.", ""]
            continue
        lines += ["| option | type | default |", "|---|---|---|"]
        lines += [f"| `scenario_options.{option}` | `{kind}` | `{shown}` |" for option, kind, shown in options]
        lines.append("")
    return lines


# ----- the page ----------------------------------------------------------------------------


def _intro() -> list[str]:
    moved = ", ".join(f"`{old}` (now `{new}`)" for old, new in MOVED_KEYS.items())
    refused = ", ".join(f"`{key}`" for key in STREAM_SETTINGS)
    return [
        "# Configuration reference", "",
        "Every setting of a run, generated from the settings models themselves (`TrainConfig` in "
        "`multiagent_rl/config.py` and the sections it holds), so each key, type and default below "
        "is exactly what `multiagent-rl train` accepts.", "",
        "**Where a setting comes from.** Layers, each over the one before: the defaults below; the "
        "scenario's own recommended settings (its `train_defaults`); on resume, the run folder's "
        "`config.yaml`; the YAML file given with `--config`; then each `--set key=value`. The scenario "
        "itself is `train`'s first argument. A section written in the `--config` file replaces the "
        "layers' whole section; `--set` changes one key, dotted for a section's (`--set "
        "grpo.scale_rewards=false`, `--set scenario_options.solvers=3`), and reads its value as YAML "
        "(`--set log_with=[]`, `--set temperature=null`). The run folder's `config.yaml` holds the "
        "resolved settings, headed by a comment saying which layer gave each one that is not a default.", "",
        "**Mistakes stop the run.** An unknown or mistyped key, a value of the wrong type, out of its "
        "bounds or not finite, or settings that do not fit together stop `train` with one line naming "
        "the key (exit code 2). The earlier flat keys still work: " + moved + ".", "",
        "**Resuming.** `train` on an existing run folder refuses changed " + refused + ": they shape "
        "the run's task and sampling streams or its trained weights, so the resumed run would not be "
        "the one it continues. `--allow-changes` goes on anyway. Every change, of these or of any other "
        "setting, is recorded in `config-changes.jsonl` with the step it took effect.", "",
        "**Reading the tables.** A type such as `int >= 1` or `float > 0 | None` gives the bounds a "
        "value must keep (`None` is written `null` in YAML); `'hf' | 'vllm'` lists the allowed strings. "
        "`rollout.branching[].step` is the `step` of each item of the list `rollout.branching`. The "
        "command-line flags are in the [command-line reference](cli.md).", "",
    ]


def config_reference() -> str:
    """The page `reference/config.md`, in Markdown."""
    return "\n".join([*_intro(), *settings_tables(TrainConfig), *_scenario_lines()])
