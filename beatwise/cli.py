"""The ``beatwise`` command: one entry point, subcommands by area."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main"]

#: Modules under beatwise.commands that register subcommands.
_COMMAND_MODULES = ("data", "detect", "classify", "live", "keys", "soak", "faults", "docs")
#: Command groups: name -> help.
_GROUPS = {
    "eval": "score the pipeline against reference annotations",
    "bench": "benchmarks (speed, peers)",
    "dataset": "build the beat dataset",
    "data": "the PhysioNet databases",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beatwise", description="Real-time ECG arrhythmia monitor."
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {"": top}
    for name, help_ in _GROUPS.items():
        p = top.add_parser(name, help=help_, description=help_)
        sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        sub.required = True
        groups[name] = sub
    for mod in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"beatwise.commands.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"beatwise.commands.{mod}":
                continue
            raise
        module.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``beatwise data check | head``): nothing more to say, and
        # no second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError) as exc:
        # Errors meant for the user (bad record, bad option value): one clear line.
        print(f"beatwise: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        zmq = sys.modules.get("zmq")  # imported only by the commands that open sockets
        if zmq is None or not isinstance(exc, zmq.ZMQError):
            raise
        # an endpoint taken or malformed: ZeroMQ's message names it
        print(
            f"beatwise: error: ZeroMQ endpoint: {exc}; expected a free endpoint such as "
            "tcp://127.0.0.1:5555 or ipc:///tmp/beatwise.sock.",
            file=sys.stderr,
        )
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
