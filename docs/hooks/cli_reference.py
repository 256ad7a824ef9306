"""mkdocs hook: the CLI reference, generated from `distilbench.cli.build_parser()` each time the site is built.

A page that holds the line `<!-- cli-reference -->` gets it replaced by one section per verb: its purpose, usage,
one table per group of flags (flag, what it does, default) and the examples of its epilog. Nothing of it is typed
by hand, so the reference cannot drift from what `--help` says.
"""

from __future__ import annotations

import argparse

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """mkdocs' hook: fill the marker of the CLI reference page."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference_markdown())


def cli_reference_markdown() -> str:
    """The whole reference: the top-level usage, then every verb in the parser's order."""
    from distilbench.cli import build_parser

    parser = build_parser()
    parts = ["## distilbench", "", _usage(parser), ""]
    parts += _groups(parser)
    for name, verb_parser, summary in _verbs(parser):
        parts += [f"## distilbench {name}", ""]
        if summary:
            parts += [_one_line(summary), ""]
        if verb_parser.description and _one_line(verb_parser.description) != _one_line(summary or ""):
            parts += [_one_line(verb_parser.description), ""]
        parts += [_usage(verb_parser), ""]
        parts += _groups(verb_parser)
        if verb_parser.epilog:
            parts += ["**Examples**", "", "```text", verb_parser.epilog.strip("\n"), "```", ""]
    return "\n".join(parts)


def verb_names() -> list[str]:
    """Every verb of the parser (what the generated page must cover)."""
    from distilbench.cli import build_parser

    return [name for name, _, _ in _verbs(build_parser())]


def _verbs(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    """(name, parser, one-line help) of each verb; aliases of a verb are listed once, under its own name."""
    verbs = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {choice.dest: choice.help for choice in action._choices_actions}
        seen = set()
        for name, verb_parser in action.choices.items():
            if id(verb_parser) in seen:
                continue
            seen.add(id(verb_parser))
            verbs.append((name, verb_parser, summaries.get(name)))
    return verbs


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return "```text\n" + formatter.format_help().strip() + "\n```"


def _groups(parser: argparse.ArgumentParser) -> list[str]:
    """One table per argument group that has visible arguments."""
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if _shown(a)]
        if not actions:
            continue
        lines += [f"**{(group.title or 'arguments').capitalize()}**", ""]
        if group.description:
            lines += [_one_line(group.description), ""]
        lines += ["| argument | what | default |", "| --- | --- | --- |"]
        for action in actions:
            lines.append(f"| {_names(action)} | {_cell(_help(parser, action))} | {_cell(_default(action))} |")
        lines.append("")
    return lines


def _shown(action: argparse.Action) -> bool:
    """Arguments worth a row: not hidden, not the verbs themselves, not -h (every verb has it)."""
    hidden = (argparse._SubParsersAction, argparse._HelpAction)
    return action.help is not argparse.SUPPRESS and not isinstance(action, hidden)


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        metavar = action.metavar or (
            action.dest.upper() if not action.choices else "{" + ",".join(map(str, action.choices)) + "}"
        )
        metavar = " " + (" ".join(metavar) if isinstance(metavar, tuple) else str(metavar))
    return ", ".join(f"`{option}{metavar}`" for option in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    try:
        text = parser._get_formatter()._expand_help(action)
    except (KeyError, TypeError, ValueError):
        pass
    if action.choices and action.option_strings and "{" not in _names(action):
        text += f" Choices: {', '.join(map(str, action.choices))}."
    return text


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, argparse.SUPPRESS, False) or action.nargs == 0:
        return ""
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    return f"`{default}`"


def _one_line(text: str) -> str:
    """Help text as one Markdown line: whitespace collapsed, and < > outside `code` escaped (so that
    RUN/models/<model>/best is shown, not taken for an HTML tag)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
