"""The ``cmkd-doctor`` command: one typer app, one module per command, one exit point.

Exit codes: 0 success, 1 internal error, 2 bad input or usage, 3 a failed --expect,
130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import signal
import sys
import threading
import traceback

import typer
from typer.core import TyperGroup

from cmkd_doctor import __version__, distributed
from cmkd_doctor.cli._common import PanelCommand, err, show_help_without_command, silence
from cmkd_doctor.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, CmkdError

# Every command: its module, the typer function or app in it, and its one-line summary
# (shown by --help, which imports no command module: the commands that train import
# torch, and --help, --version, schema and examples list start without it).
COMMANDS = {
    "diagnose": ("diagnose", "diagnose_command",
                 "Everything in one command: rank, derive teachers, distil, say what it "
                 "means."),
    "rank": ("rank", "rank",
             "Algorithm 1: rank modality a's channels by modality-general information."),
    "derive-teacher": ("derive_teacher", "derive_teacher_command",
                       "A modality-general, -specific or random teacher from a rank run."),
    "distill": ("distill", "distill_command",
                "Students of every teacher against No-KD and Regular-KD, with a verdict."),
    "extract": ("extract", "extract_command",
                "Features of one layer of a backbone (torchvision or ONNX), for rank."),
    "report": ("report", "report_command",
               "The diagnosis as text, Markdown, HTML or JSON, with plots; runs compared."),
    "schema": ("schema", "schema_command",
               "The JSON Schema of a document cmkd-doctor writes, or their list."),
    "examples": ("examples", "app", "The paper's datasets as built-in examples."),
}


class LazyGroup(TyperGroup):
    """The root command: each subcommand's module is imported when it is run (or its own
    --help shown), never to list it."""

    def list_commands(self, ctx) -> list[str]:
        return [*self.commands, *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr, summary = COMMANDS[cmd_name]
            found = getattr(importlib.import_module(f"cmkd_doctor.cli.{module}"), attr)
            # built as the root would build it, with the root's settings
            holder = typer.Typer(**SETTINGS)
            holder.callback()(lambda: None)  # a group, even with one command
            if isinstance(found, typer.Typer):
                holder.add_typer(found, name=cmd_name)
            else:
                holder.command(cmd_name, cls=PanelCommand)(found)
            command = typer.main.get_command(holder).commands[cmd_name]
            command.short_help = summary
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter) -> None:
        rows = [(name, summary) for name, (_, _, summary) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


SETTINGS = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    # help texts are plain: "[default: ...]" and user paths are never read as markup
    "rich_markup_mode": None,
}
app = typer.Typer(
    name="cmkd-doctor",
    cls=LazyGroup,
    help="Diagnose crossmodal knowledge distillation with the Modality Focusing Hypothesis.",
    **SETTINGS,
)

_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        print(f"cmkd-doctor {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks of errors."),
) -> None:
    _state["verbose"] = verbose
    show_help_without_command(ctx)


def _fail(message: str, code: int) -> int:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    return code


# how alike an unknown option and a suggested one must be (difflib's ratio): --repeat and
# --repeats 0.93, --exampel and --example 0.86, --bogus and --groups 0.57
TYPO_RATIO = 0.75
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EFBIG}


def _kinds(exc: BaseException) -> set[str]:
    # typer raises click's exceptions, or those of its vendored copy of click; both keep
    # click's class names, so match on those rather than import either.
    return {cls.__name__ for cls in type(exc).__mro__}


class Stopped(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so that every ``finally`` (temporary
    files) runs before the process exits. Not a KeyboardInterrupt: typer would turn
    that into a silent exit code."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.message, self.code = (("interrupted", 130) if signum == signal.SIGINT
                                   else ("terminated", 143))


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


# commands (by their leading words) that run without torch, and those that train
LIGHT = (("schema",), ("examples", "list"), ("examples", "make", "gaussian"),
         ("examples", "fetch"))
TRAINING = (("rank",), ("derive-teacher",), ("distill",), ("diagnose",),
            ("examples", "reproduce"))


def _preload(args: list[str]) -> None:
    """Import the command's module, and torch when it will need it, before the signal
    handlers go in: a signal must never land inside torch's initialisation (its C++
    static constructors abort the process when an exception unwinds through them)."""
    if any(a in ("--help", "--version") for a in args):
        return
    words = tuple(a for a in args if not a.startswith("-"))
    if not words or words[0] not in COMMANDS:
        return
    importlib.import_module(f"cmkd_doctor.cli.{COMMANDS[words[0]][0]}")
    if words != ("examples",) and not any(words[: len(light)] == light for light in LIGHT):
        # and what parsing the options imports (pydantic, a Rust extension)
        import pydantic  # noqa: F401
        import torch  # noqa: F401
    if any(words[: len(train)] == train for train in TRAINING):
        # the first optimizer imports torch._dynamo (sympy, triton's C extension: seconds
        # of imports); a signal landing inside them left the process spinning
        # (tests/test_hostile.py)
        import torch._dynamo  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``sys.exit`` is left to the caller).

    Under torchrun only rank 0 prints; every process leaves the process group on exit.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if not distributed.is_main():
        silence()
    _preload(args)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) != signal.SIG_IGN:  # a background job ignores ^C
                previous[signum] = signal.signal(signum, _stop)
    try:
        return _main(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        distributed.shutdown()


def _main(args: list[str]) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="cmkd-doctor", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except CmkdError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Stopped as stop:
        return _fail(stop.message, stop.code)
    except OSError as exc:
        if exc.filename is not None or exc.errno not in _OUTPUT_ERRNOS:
            return _internal(exc)
        # stdout is full or closed (files we write name themselves in an InputError)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more can be shown
        return _fail(f"standard output cannot be written ({exc.strerror})",
                     EXIT_BAD_INPUT)
    except Exception as exc:  # the one place any error becomes an exit code
        kinds = _kinds(exc)
        if "Exit" in kinds:
            return exc.exit_code
        if "Abort" in kinds:
            return _fail("interrupted", 130)
        if "NoSuchOption" in kinds and exc.possibilities:
            # click offers any name within a loose distance (--bogus: "--groups, --out");
            # keep only those a typo could have made
            exc.possibilities = [p for p in exc.possibilities if difflib.SequenceMatcher(
                None, exc.option_name, p).ratio() >= TYPO_RATIO]
        if "ClickException" in kinds:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            return _fail(exc.format_message() + hint, EXIT_BAD_INPUT)
        return _internal(exc)


def _internal(exc: BaseException) -> int:
    if _state["verbose"]:
        traceback.print_exc()
    return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose "
                 "for the traceback, and please report it)", EXIT_INTERNAL)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
