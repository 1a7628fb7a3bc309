"""MkDocs hook: the command-line reference is generated from npformer's argument parser, so it
cannot drift from the code. A page holding ``<!-- cli-reference -->`` gets every command's help."""

from __future__ import annotations

import argparse

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    from npformer.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen, parts = set(), ["```text", parser.format_help().strip(), "```", ""]
    for name, command in sub.choices.items():
        if id(command) in seen:  # an alias of a command already shown
            continue
        seen.add(id(command))
        parts += [f"## npformer {name}", "", "```text", command.format_help().strip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
