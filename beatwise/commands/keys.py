"""``beatwise keys``: make a CURVE key pair; and the ``--curve-*`` options of the live commands.

The live commands (``replay``, ``monitor``, ``alerts``) take their CURVE options from
:func:`add_curve_args` and turn them into :class:`beatwise.keys.CurveKeys` with
:func:`curve_from_args`, so the flags mean the same on every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from beatwise.keys import CurveError, CurveKeys, write_keypair

__all__ = ["add_curve_args", "curve_from_args", "register"]

#: Endpoint prefixes that stay on this machine (no CURVE needed).
_LOCAL = ("ipc://", "inproc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:")


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups[""].add_parser(
        "keys",
        help="make a CURVE key pair (NAME.key public, NAME.key_secret secret)",
        description="Make a ZeroMQ CURVE key pair for encrypted, authenticated sockets.",
    )
    p.add_argument("name", help="file name stem, e.g. replay, monitor, nurse-station")
    p.add_argument("--dir", default=".", help="folder to write into (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing pair")
    p.set_defaults(func=_keys)


def _keys(args: argparse.Namespace) -> int:
    public, secret = write_keypair(args.dir, args.name, force=args.force)
    print(
        f"public key: {public}  (give it to the other side)\n"
        f"secret key: {secret}  (keep it here, mode 0600; never share it)\n"
        "use it:\n"
        f"  as a server (beatwise replay; beatwise monitor for its --publish sockets):\n"
        f"    --curve-secret {secret} --curve-allow DIR\n"
        "    DIR holds the public key (.key) of every client you accept\n"
        f"  as a client (beatwise monitor towards the replay; beatwise alerts):\n"
        f"    --curve-secret {secret} --curve-server-key SERVER.key\n"
        f"  and copy {public} into the allowed folder of each server it connects to"
    )
    return 0


def add_curve_args(p: argparse.ArgumentParser, *, server: bool, client: bool) -> None:
    """Add ``--curve-secret`` and, for the roles the command plays, ``--curve-allow``
    (server) and ``--curve-server-key`` (client)."""
    g = p.add_argument_group(
        "CURVE encryption and authentication (see 'beatwise keys'; off by default)"
    )
    g.add_argument(
        "--curve-secret", default=None, metavar="PATH", help="our secret key file (NAME.key_secret)"
    )
    if client:
        g.add_argument(
            "--curve-server-key",
            default=None,
            metavar="PATH",
            help="the server's public key file (SERVER.key): connect only to it, encrypted",
        )
    if server:
        g.add_argument(
            "--curve-allow",
            default=None,
            metavar="DIR",
            help="folder of the public key files (*.key) of the clients we accept",
        )


def curve_from_args(
    args: argparse.Namespace, *, bound: Sequence[str | None] = ()
) -> CurveKeys | None:
    """The command's :class:`CurveKeys` (None without ``--curve-secret``).

    Warns on stderr when an endpoint in ``bound`` leaves the machine without CURVE on it.

    Args:
        args: Parsed options of a command set up by :func:`add_curve_args`.
        bound: Endpoints the command binds (None entries are skipped).
    """
    server_key = getattr(args, "curve_server_key", None)
    allow = getattr(args, "curve_allow", None)
    keys = None
    if args.curve_secret is None and (server_key or allow):
        raise CurveError(
            "--curve-server-key / --curve-allow without --curve-secret: expected our secret "
            "key file too (make one with 'beatwise keys NAME')."
        )
    if args.curve_secret is not None:
        if server_key is None and allow is None:
            raise CurveError(
                f"--curve-secret {args.curve_secret} alone secures nothing: expected "
                "--curve-server-key (as a client) and/or --curve-allow (as a server)."
            )
        keys = CurveKeys.load(args.curve_secret, server_key=server_key, allow=allow)
    # ">endpoint" connects into a proxy instead of binding: not ours to guard here
    exposed = [e for e in bound if e and not e.startswith((*_LOCAL, ">"))]
    if exposed and (keys is None or keys.allowed is None):
        print(
            f"beatwise: warning: {', '.join(exposed)} can be reached from other machines and "
            "is not secured: anyone who reaches it can read or feed the stream "
            "(use --curve-secret and --curve-allow).",
            file=sys.stderr,
        )
    return keys
