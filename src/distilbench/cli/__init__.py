"""The `distilbench` command: one small module per group of verbs; parse, call the API, print."""

from distilbench.cli.commands import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
