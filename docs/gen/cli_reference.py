"""The command-line reference page, generated from `multiagent_rl.cli.build_parser()` itself."""

from __future__ import annotations

import argparse

from multiagent_rl.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return {name: (sub, helps.get(name) or "") for name, sub in action.choices.items()}
    return {}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest.upper()}`"
        if action.metavar and action.option_strings:
            name += f" `{action.metavar}`"
        if isinstance(action, argparse._StoreTrueAction):
            default = "off"
        elif action.nargs == "*":
            default = "none"
        elif action.required or not action.option_strings:
            default = "required"
        elif action.default in (None, [], argparse.SUPPRESS):
            default = "-"
        else:
            default = f"`{action.default}`"
        repeat = " (repeatable)" if isinstance(action, argparse._AppendAction) else ""
        rows.append(f"| {name} | {default} | {_cell(action.help or '')}{repeat} |")
    return rows


def cli_reference() -> str:
    parser = build_parser()
    parts = ["# Command-line reference", "",
             "Generated from the parser itself (`multiagent_rl/cli.py`), so it lists exactly what "
             "`multiagent-rl COMMAND --help` accepts. Bad input is one line on stderr and exit code 2; "
             "`--debug` (or `MULTIAGENT_RL_DEBUG=1`) shows the whole traceback. "
             "`--set KEY=VALUE` takes any key of the [configuration](config.md).", ""]
    for name, (sub, summary) in _subcommands(parser).items():
        usage = " ".join(sub.format_usage().split())[len("usage: "):]
        parts += [f"## {name}", "", summary, "", f"```\n{usage}\n```", ""]
        rows = _argument_rows(sub)
        if rows:
            parts += ["| argument | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(parts)
