"""The ``edgeship`` command line.

Commands live one per module in :mod:`edgeship.commands` and are imported only when invoked,
so ``edgeship --help`` and the device runtime start fast and never import TensorFlow.
Bad input prints one line ``error: ...`` and exits 1: a library error, and a command line that
click rejects (a value out of range, an unknown option or command, a missing argument), which
names the option and the command's ``--help``. Only running a group without a command (its help)
keeps click's exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

import click

from . import __version__
from .errors import EdgeshipError, describe_os_error

# name -> ("module:attribute", one-line summary shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "calibrate": ("edgeship.commands.calibrate:calibrate", "Build a representative dataset from images, videos and cameras."),
    "convert": ("edgeship.commands.convert:convert", "Prune and quantize a Keras model to TFLite and/or OpenVINO IR."),
    "prune": ("edgeship.commands.prune:prune", "Remove whole channels from a Keras model: fewer FLOPs, faster."),
    "verify": ("edgeship.commands.verify:verify", "Check an artifact's accuracy against the float Keras model."),
    "drift": ("edgeship.commands.drift:drift", "Compare field frames with a model's calibration profile."),
    "bench": ("edgeship.commands.bench:bench", "Measure load time, latency percentiles, throughput and memory."),
    "run": ("edgeship.commands.run:run", "Run real-time inference on a camera, stream or video."),
    "stats": ("edgeship.commands.stats:stats", "Print inspection yield per hour from the counters database."),
    "targets": ("edgeship.commands.targets:targets", "List and show device profiles."),
    "bundle": ("edgeship.commands.bundle:bundle", "Pack an artifact, config and runtime for a target device."),
    "flash": ("edgeship.commands.flash:flash", "Deploy a bundle to devices over SSH with health check and rollback."),
    "device": ("edgeship.commands.device:device", "Status, logs and rollback of a deployed device."),
    "ansible": ("edgeship.commands.ansible:ansible", "Write the Ansible playbook and role that roll bundles out."),
    "quickstart": ("edgeship.commands.quickstart:quickstart", "Run the whole pipeline end to end on built-in demo data."),
}


class CommandError(click.ClickException):
    """A library error, shown as one line ``error: ...`` with exit code 1."""

    exit_code = 1

    def show(self, file=None) -> None:  # noqa: D102
        click.echo(f"error: {self.message}", err=True)


class LazyGroup(click.Group):
    """A click group that imports each command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (target, _) in COMMANDS.items() if _module_exists(target)]

    def get_command(self, ctx: click.Context, name: str):
        entry = COMMANDS.get(name)
        if entry is None or not _module_exists(entry[0]):
            return None
        module_name, attr = entry[0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError as e:
            help_and_exit(e)
        except click.UsageError as e:
            raise usage_error_line(e, ctx) from e

    def invoke(self, ctx: click.Context):
        wants_json = "--json" in ctx.args  # the command's own arguments (ctx.args holds them before they are parsed)
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as e:  # a group such as `edgeship device` without its command
            help_and_exit(e)
        except click.UsageError as e:
            raise _json_too(usage_error_line(e, ctx), wants_json) from e
        except EdgeshipError as e:
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            raise _json_too(CommandError(str(e)), wants_json) from e
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except OSError as e:  # a full disk, a read-only folder: the system's reason, as one line
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            raise _json_too(CommandError(describe_os_error(e)), wants_json) from e
        except ImportError as e:  # an optional dependency this command needs is not installed
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            raise _json_too(CommandError(missing_extra_message(e)), wants_json) from e
        except Exception as e:  # noqa: BLE001 - the last resort: a bug, still one line (the traceback under -v)
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            raise _json_too(CommandError(f"internal error: {type(e).__name__}{': ' + first[:300] if first else ''} "
                                         "(run with -v for the traceback)"), wants_json) from e


# top-level module -> the extra that installs it (setup.cfg)
EXTRAS = {"tensorflow": "convert", "tf_keras": "convert", "tensorflow_model_optimization": "convert", "nncf": "convert",
          "sklearn": "convert", "matplotlib": "convert", "keras": "convert", "openvino": "openvino",
          "ai_edge_litert": "runtime", "cv2": "runtime", "paho": "runtime", "gpiozero": "gpio"}


def missing_extra_message(e: ImportError) -> str:
    """``needs X``: which pip extra brings the module an ImportError names."""
    name = getattr(e, "name", None)
    if not name and str(e).count("'") >= 2:
        name = str(e).split("'")[1]
    module = (name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return f"internal error: {type(e).__name__}: {e} (run with -v for the traceback)"
    return f"this needs {module}, which is not installed: pip install 'edgeship[{extra}]'"


def help_and_exit(e: click.exceptions.NoArgsIsHelpError) -> None:
    """A group run without its command: its help on stdout, and exit 1 like any other incomplete command line."""
    click.echo(e.ctx.get_help())
    e.ctx.exit(1)


def _json_too(err: click.ClickException, wants_json: bool) -> click.ClickException:
    """With ``--json`` a failure also prints ``{"error": ...}`` on stdout, so a script reading stdout sees it."""
    if wants_json and isinstance(err, CommandError):
        import json

        click.echo(json.dumps({"error": err.message}))
    return err


def usage_error_line(e: click.UsageError, ctx: click.Context) -> click.UsageError | CommandError:
    """A rejected command line as one line with exit code 1: a missing or unreadable file as
    ``OPTION: message``, anything else as click's message plus where the help is. A group run
    without a command (click shows its help) is left as it is."""
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        return e
    if (isinstance(e, click.BadParameter) and not isinstance(e, click.MissingParameter)
            and isinstance(getattr(e.param, "type", None), click.Path)):
        name = max(e.param.opts, key=len) if isinstance(e.param, click.Option) else e.param.human_readable_name
        return CommandError(f"{name}: {e.message}")
    if e.ctx is not None and e.ctx is not ctx:
        where = e.ctx.command_path
    else:  # raised while parsing, before the command's own context existed
        where = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
    message = " ".join(e.format_message().split())
    return CommandError(f"{message} (see '{where} --help')")


def _module_exists(target: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgeship")
@click.option("-v", "--verbose", is_flag=True, help="Log details and show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """edgeship: take a trained Keras vision model to cameras at the edge.

    \b
    Workstation:  calibrate -> convert (prune, quantize) -> verify -> bench -> bundle -> flash
    Device:       run (camera -> preprocess -> infer -> postprocess -> app -> sinks), bench

    \b
    Start here:   edgeship quickstart
    Help on one:  edgeship COMMAND --help
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if not verbose:  # TensorFlow's C++ INFO/WARNING lines (oneDNN, CPU features...); errors still show
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s: %(message)s" if not verbose else "%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("tensorflow", "absl", "h5py", "nncf", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.INFO)
    logging.captureWarnings(True)  # library warnings (Keras, tf.lite, NNCF) become log records: shown with -v
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. SIGTERM ends a command like Ctrl-C does, so its clean-up (temporary
    files, staging folders) runs; ``edgeship run`` installs its own graceful stop on top."""
    import signal

    def terminated(signum: int, frame) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, terminated)
    args = sys.argv[1:] if argv is None else list(argv)
    if not verbose_requested(args):
        quiet_libraries()
    cli.main(args=argv, prog_name="edgeship")


def verbose_requested(args: list[str]) -> bool:
    """``-v`` / ``--verbose`` before the command name."""
    for a in args:
        if a in ("-v", "--verbose"):
            return True
        if not a.startswith("-"):
            return False
    return False


def quiet_libraries() -> None:
    """Only edgeship's own lines on the terminal: TensorFlow's C++ log, absl, oneDNN, the quantizer's dumps and
    LiteRT's INFO lines are dropped from stderr, library warnings go to logging (shown with -v)."""
    from .native_stderr import install_filter

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # OpenCV's own WARN lines ("can't open camera by index") and FFmpeg's ("moov atom not found",
    # "Connection refused"): edgeship says what failed in its own one-line error
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    install_filter()


if __name__ == "__main__":  # pragma: no cover
    main()
