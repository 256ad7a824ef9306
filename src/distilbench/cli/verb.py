"""A verb of the command: its flags, its help with examples, and the one API function it calls."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distilbench.cli.options import DeprecatedSpelling, Flag, add_flags

WIDTH = 100  # descriptions are wrapped here; the examples keep their lines


@dataclass(frozen=True)
class OldPositional:
    """A positional spelling of a flag that still works for one release with a warning (`export MODEL`)."""

    dest: str
    metavar: str
    replacement: str  # e.g. "--model MODEL"
    nargs: str = "?"


@dataclass(frozen=True)
class Verb:
    """One verb: `api` names the function of distilbench.api it calls with its flags as keyword arguments
    (each flag's dest), passing only the flags the user gave. `required`: dests that must be given but
    cannot be argparse-required because an old positional spelling also fills them. `adjust` maps the
    parsed arguments before the call (rare); `verbose_as`: the argument that `distilbench -v` sets to True
    (serve's access log); `show` prints the result (most API functions print their own)."""

    name: str
    api: str
    help: str
    description: str
    examples: tuple[str, ...]
    flags: tuple[Flag, ...]
    note: str = ""
    old_positional: OldPositional | None = None
    required: tuple[str, ...] = ()
    adjust: Callable[[dict, argparse.ArgumentParser], dict] | None = None
    verbose_as: str | None = None
    show: Callable[[Any], None] | None = None

    def epilog(self) -> str:
        """The note (if any) and the examples, one command per line, shown as they are."""
        note = textwrap.fill(self.note, WIDTH) + "\n\n" if self.note else ""
        return note + "examples:\n" + "\n".join(f"  {example}" for example in self.examples)

    def add_parser(self, verbs: argparse._SubParsersAction) -> argparse.ArgumentParser:
        """This verb's parser: its flags in their groups, the old positional spelling hidden, and itself as the
        parser's default `verb_spec` (how run() finds the verb to call)."""
        parser = verbs.add_parser(
            self.name,
            help=self.help,
            description=textwrap.fill(self.description, WIDTH),
            epilog=self.epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        add_flags(parser, list(self.flags))
        old = self.old_positional
        if old is not None:
            parser.add_argument(
                old.dest,
                nargs=old.nargs,
                metavar=old.metavar,
                default=argparse.SUPPRESS,
                action=DeprecatedSpelling,
                replacement=old.replacement,
                old=f"positional {old.metavar}",
                help=argparse.SUPPRESS,
            )
        parser.set_defaults(verb_spec=self, verb_parser=parser)
        return parser

    def arguments(self, args: argparse.Namespace) -> dict:
        """The API call's keyword arguments: every flag of this verb the user gave (or a positional spelling)."""
        dests = [flag.dest for flag in self.flags]
        if self.old_positional is not None:
            dests.append(self.old_positional.dest)
        given = {dest: getattr(args, dest) for dest in dict.fromkeys(dests) if getattr(args, dest, None) is not None}
        required = [*self.required, *(f.dest for f in self.flags if f.deprecated and f.kwargs.get("required"))]
        missing = [dest for dest in required if dest not in given]
        if missing:
            spelled = {flag.dest: flag.option for flag in self.flags}
            options = ", ".join(spelled.get(dest, f"--{dest.replace('_', '-')}") for dest in missing)
            args.verb_parser.error(f"the following arguments are required: {options}")
        if self.verbose_as and getattr(args, "verbose", False):
            given[self.verbose_as] = True
        return self.adjust(given, args.verb_parser) if self.adjust else given

    def call(self, arguments: dict) -> Any:
        """Call this verb's one API function. A library of an extra that is not installed (the base install runs
        exported bundles only) ends with one line naming the extra to install, not a traceback."""
        from distilbench.core.extras import missing_extra_error

        try:
            from distilbench import api

            result = getattr(api, self.api)(**arguments)
        except ImportError as exc:
            error = missing_extra_error(exc, f"distilbench {self.name}", verb=self.name)
            if error is None:
                raise
            raise error from None
        if self.show is not None:
            self.show(result)
        return result
