"""The ``medcl`` command line. Thin: parse, call the library, print a short summary.

Each pipeline stage's sub-commands live in one module (``data_commands``, ``pretrain_commands``,
``evaluate_commands``, ``diagnosis_commands``, ``export_commands``, ``report_commands``,
``demo_commands``, ``template_commands``) and register
themselves on ``app``. Heavy imports (torch,
MONAI, Lightning) happen inside the commands, so ``medcl --help`` answers quickly.
Exit codes: 0 success, 2 bad input (clear message, no traceback), 1 internal error.
"""

from __future__ import annotations

import os

import typer

from medcl.errors import MedclInputError

app = typer.Typer(
    name="medcl",
    help="Pretrain medical image encoders with clinical metadata as prior knowledge "
    "(kernel decoupled uniformity).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

from medcl.cli import (  # noqa: E402
    data_commands,
    demo_commands,
    diagnosis_commands,
    evaluate_commands,
    export_commands,
    pretrain_commands,
    template_commands,
)

# one commands module per pipeline stage; registration order is the order of `medcl --help`
for _module in (data_commands, pretrain_commands, evaluate_commands, diagnosis_commands, export_commands,
                demo_commands):
    _module.register(app)
data_commands.register_synth(app)
from medcl.cli import report_commands  # noqa: E402

report_commands.register(app)
evaluate_commands.register_compare(app)
template_commands.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map errors to exit codes (2 bad input, 1 internal error).

    Usage errors (unknown option, missing argument) are handled by typer itself with exit code 2.
    """
    debug = os.environ.get("MEDCL_DEBUG") == "1"
    try:
        app(args=argv, prog_name="medcl")
    except SystemExit as err:  # typer's standalone mode ends every run with sys.exit(code)
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except MedclInputError as err:
        if debug:
            raise
        typer.secho(f"error: {err}", fg="red", err=True)
        return 2
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        return 130
    except Exception as err:  # an internal error: say so, point at MEDCL_DEBUG for the traceback
        if debug:
            raise
        typer.secho(
            f"internal error: {type(err).__name__}: {err}\n(set MEDCL_DEBUG=1 for the traceback)",
            fg="red",
            err=True,
        )
        return 1
    return 0
