"""Subcommands of the ``beatwise`` CLI, one module per area.

Each module has ``register(groups)`` where ``groups`` maps a command group name
("" for the top level, "eval", "bench", "dataset", "data") to its argparse subparsers. Heavy
imports (torch, zmq) happen inside the command functions, so ``beatwise --help`` is fast.
"""
