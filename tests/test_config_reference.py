"""The generated configuration reference: every key described, every key and default on the
page, nested sections walked, and the scenarios' options read as their factories declare them."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel, Field

from docs.gen.config_reference import (
    all_keys,
    config_reference,
    default_text,
    is_section,
    scenario_options,
    settings_tables,
    yaml_text,
)
from multiagent_rl.config import STREAM_SETTINGS, TrainConfig


def undescribed(model: type[BaseModel]) -> list[str]:
    """Keys of `model` (its sections' keys included) whose description is missing or blank."""
    return [key for key, info in all_keys(model) if not (info.description or "").strip()]


def rows_by_key(page: str) -> dict[str, str]:
    """The table row of each key on `page`, by key."""
    return {line.split("`")[1]: line for line in page.splitlines() if line.startswith("| `")}


class Knob(BaseModel):
    turns: int = Field(3, ge=1, description="How far.")
    label: str | None = None  # no description: the check must name it


class Panel(BaseModel):
    knob: Knob = Field(default_factory=Knob, description="One knob.")
    knobs: list[Knob] = Field(default_factory=list, description="More knobs.")
    speed: float = Field(0.5, gt=0, le=1.0, description="How fast.")


def test_every_config_key_has_a_description():
    missing = undescribed(TrainConfig)
    assert not missing, f"config keys without a description: {', '.join(missing)}"


def test_the_description_check_names_a_nested_key_without_one():
    assert undescribed(Panel) == ["knob.label", "knobs[].label"]


def test_nested_sections_and_lists_of_them_are_walked():
    assert [key for key, _ in all_keys(Panel)] == [
        "knob", "knob.turns", "knob.label", "knobs", "knobs[].turns", "knobs[].label", "speed"
    ]


def test_a_toy_model_gets_a_table_per_section_with_types_and_defaults():
    page = "\n".join(settings_tables(Panel))
    rows = rows_by_key(page)
    assert "## knob" in page.splitlines() and "## knobs[]" in page.splitlines()
    assert "knob" not in rows  # a section is a table of its own, not a row
    assert rows["knob.turns"].startswith("| `knob.turns` | `int >= 1` | `3` |")
    assert rows["knob.label"].startswith("| `knob.label` | `str | None` | `null` |")
    assert rows["knobs"].startswith("| `knobs` | `list[Knob]` | `[]` |")
    assert rows["speed"].startswith("| `speed` | `float > 0, <= 1` | `0.5` |")


def test_the_page_lists_every_key_with_its_default():
    page = config_reference()
    assert page.startswith("# Configuration reference\n")
    rows, headings = rows_by_key(page), set(page.splitlines())
    for key, info in all_keys():
        if is_section(info):
            assert f"## {key}" in headings, f"section {key} has no heading"
            continue
        assert key in rows, f"{key} is not on the page"
        cells = rows[key].split("` | `")
        assert cells[2].startswith(default_text(info) + "` |"), f"{key}: default {default_text(info)} not in {rows[key]}"


def test_the_page_renders_types_and_defaults_as_a_user_writes_them():
    rows = rows_by_key(config_reference())
    assert "| `'hf' | 'vllm'` | `hf` |" in rows["backend"]
    assert "| `float > 0 | None` | `null` |" in rows["time_budget_minutes"]
    assert "| `int >= 0, < 2**32` | `0` |" in rows["seed"]
    assert "| `'off' | 'mirror' | 'pool' | 'both'` | `'off'` |" in rows["league.mode"]  # YAML reads bare off as false
    assert "| `list[str]` | `[tensorboard]` |" in rows["log_with"]


def test_the_keys_refused_on_resume_come_from_the_code():
    page = config_reference()
    resuming = next(line for line in page.splitlines() if line.startswith("**Resuming.**"))
    assert all(f"`{key}`" in resuming for key in STREAM_SETTINGS)


def test_a_constraint_the_page_cannot_show_stops_the_build():
    class Named(BaseModel):
        name: str = Field("a", max_length=3, description="Short.")

    with pytest.raises(ValueError, match="'name'"):
        settings_tables(Named)


def test_scenario_options_match_the_factories_signatures():
    import scenarios.debate
    import scenarios.division_of_labour

    found = scenario_options()
    assert {"debate", "division_of_labour", "kuhn_poker", "negotiation", "signalling", "tictactoe"} <= set(found)
    for module in (scenarios.debate, scenarios.division_of_labour):
        name = module.__name__.rsplit(".", 1)[1]
        signature = inspect.signature(module.make_scenario).parameters
        options = found[name][1]
        assert [option for option, _, _ in options] == list(signature)
        assert [shown for _, _, shown in options] == [yaml_text(p.default) for p in signature.values()]
    page = config_reference()
    assert "| `scenario_options.solvers` | `int` | `2` |" in page
