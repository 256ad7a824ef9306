"""The `distilbench` command: the parser of every verb, then one call of distilbench.api; errors become one line.

The verbs live in small modules by group (experiments: compare, train, distill, distill-general, tune; runtime:
evaluate, predict, serve, export, cascade; bench: bench, report), their flags in options. Building the parser imports no
heavy library, so `distilbench --help` and `distilbench VERB --help` answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import signal
import sys
import threading

from distilbench import __version__
from distilbench.cli import bench, experiments, runtime
from distilbench.core.errors import DistilbenchError

VERBS = (*experiments.VERBS, *runtime.VERBS, *bench.VERBS)
ORDER = (
    "compare",
    "train",
    "distill",
    "distill-general",
    "evaluate",
    "predict",
    "serve",
    "report",
    "bench",
    "export",
    "cascade",
    "tune",
)
GRAMMAR = """the grammar of every verb:
  --model MODEL     the one model a verb acts on (a checkpoint, an alias, ...); --models A,B,... for several
  --run RUN_DIR     a run directory (the --out of compare, train, distill)
  --data SOURCE     a data source: a CSV/TSV/JSONL/Parquet path, builtin:bbc-news or hf:NAME
  --out DIR         a directory the verb writes; --output FILE a file
  distilbench VERB --help shows the flags of that verb only, with examples.

examples:
  distilbench compare --data builtin:bbc-news --models minilm-l6,student:minilm-l6 --out runs/news
  distilbench evaluate --model runs/news/models/minilm-l6/best --data held-out.csv
  distilbench predict --model runs/news/models/minilm-l6/best --input big.csv --output predictions.jsonl"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags, then one subparser per verb."""
    parser = argparse.ArgumentParser(
        prog="distilbench",
        description="Fine-tune, distil and compare BERT-family text classifiers on your data.",
        epilog=GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"distilbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (serve: every request)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    by_name = {verb.name: verb for verb in VERBS}
    for name in ORDER:
        by_name[name].add_parser(verbs)
    return parser


def _verb_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def unknown_flag_hint(option: str, verb: str, parsers: dict[str, argparse.ArgumentParser]) -> str:
    """What a flag the verb does not take was likely meant to be: distilbench's own flag, a near spelling of one
    of the verb's flags, or the verbs that take it."""
    own = [o for a in parsers[verb]._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
    name = option.split("=", 1)[0]
    if name in ("-v", "--verbose"):
        return f"{option} (distilbench's own flag: put it before the verb, distilbench {name} {verb} ...)"
    close = difflib.get_close_matches(name, own, n=1, cutoff=0.75)
    if close:
        return f"{option} (did you mean {close[0]}?)"
    elsewhere = [v for v, p in parsers.items() if v != verb and name in p._option_string_actions]
    if elsewhere and name.startswith("--"):
        return f"{option} (a flag of {', '.join(elsewhere)}, not of {verb})"
    return option


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; a flag the verb does not take is an error that says what was meant."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        verb_parsers = _verb_parsers(parser)
        if args.verb is None:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        hints = [unknown_flag_hint(extra, args.verb, verb_parsers) for extra in extras]
        verb_parsers[args.verb].error(f"unrecognized arguments: {' '.join(hints)}")
    if args.verb is None:
        parser.print_help()
    return args


def run(argv: list[str] | None = None) -> int:
    """Parse the verb's flags and call its one function of distilbench.api; 0 on success, 2 without a verb."""
    from distilbench.core.console import quiet_libraries

    args = parse(argv)
    if args.verb is None:
        return 2
    arguments = args.verb_spec.arguments(args)
    quiet_libraries(args.verbose)
    args.verb_spec.call(arguments)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, a container stop), raised like Ctrl-C so that the same clean-up
    runs: worker processes stopped, temporary files removed, finished work kept for --resume."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one clear line and a non-zero exit for problems the user can fix."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = run(argv)
    except DistilbenchError as exc:
        print(f"distilbench: error: {exc}", file=sys.stderr)
        code = 2
    except Terminated:
        print("distilbench: terminated (SIGTERM)", file=sys.stderr)
        code = 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("distilbench: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - only disk problems are turned into a message; the rest re-raise
        message = disk_problem(exc)
        if message is None:
            raise
        print(f"distilbench: error: {message}", file=sys.stderr)
        code = 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def disk_problem(exc: BaseException) -> str | None:
    """A message for a full disk or a file we may not write (libraries wrap the OSError in their own
    exceptions, hence the text check); None for anything else. Results are written atomically, so what
    was finished before is intact and a run continues with --resume."""
    text = str(exc)
    errno_ = getattr(exc, "errno", None)
    where = f" while writing {exc.filename}" if getattr(exc, "filename", None) else ""
    if errno_ in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text:
        return (
            f"the disk is full{where}; files finished before are intact. Free some space, then continue "
            f"a run with --resume"
        )
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS) or "Read-only file system" in text:
        target = f": {exc.filename}" if getattr(exc, "filename", None) else f" ({text})"
        return f"{getattr(exc, 'strerror', None) or 'permission denied'}{target}"
    return None


if __name__ == "__main__":
    main()
