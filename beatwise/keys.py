"""ZeroMQ CURVE keys: make them, read them, and secure a socket with them.

CURVE (``zmq.has("curve")``; pyzmq's wheels bundle libsodium) encrypts a connection and
authenticates both ends: a client must know the server's public key before it connects (so a
forged publisher with another secret key is refused by the client), and a server accepts only
the client public keys it was given (checked by a ZAP handler, one
:class:`zmq.auth.thread.ThreadAuthenticator` per context, started on first use).

Key files are ZeroMQ certificates, as pyzmq's ``zmq.auth.create_certificates`` writes them
and ``zmq.auth.load_certificate`` reads them: ``NAME.key`` holds the public key (hand it to the
other side), ``NAME.key_secret`` the public and secret key (keep it; written with mode 0600).
A server's allowed clients are a folder of ``*.key`` files.

The library (``beatwise``) must not import pyzmq at import time (DESIGN.md: only ``replay``
and ``stream`` speak ZeroMQ, and ``import beatwise`` stays light); this module is shared by
both of them, which may not import each other, so it lives here and imports ``zmq`` inside
the functions that touch sockets or make keys only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CurveError",
    "CurveKeys",
    "read_allowed",
    "read_keypair",
    "read_public_key",
    "secure_client",
    "secure_server",
    "stop_authenticator",
    "write_keypair",
]

#: Characters of the Z85 encoding; a CURVE key is 32 bytes = 40 of them.
_Z85 = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_KEY_CHARS = 40
PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"


class CurveError(ValueError):
    """A key file, key or CURVE setting that cannot be used (the message names it)."""


@dataclass(frozen=True, eq=False)
class CurveKeys:
    """Our CURVE identity and whom it trusts; checked where it is made.

    One object serves both roles: a socket secured as a client uses ``server_key``, one
    secured as a server uses ``allowed``. Make it from files with :meth:`load`.

    Attributes:
        public_key: Our public key, Z85 (40 bytes).
        secret_key: Our secret key, Z85 (40 bytes); must belong to ``public_key``.
        server_key: The server's public key, Z85, for client sockets; None: not a client.
        allowed: Public keys (Z85) of the clients a server socket accepts; None: not a server.
        origin: Where the keys came from (file and folder names), for messages.
    """

    public_key: bytes
    secret_key: bytes
    server_key: bytes | None = None
    allowed: frozenset[bytes] | None = None
    origin: str = "keys given in code"

    def __post_init__(self) -> None:
        for what, key in (
            ("public key", self.public_key),
            ("secret key", self.secret_key),
            ("server public key", self.server_key),
        ):
            if key is not None:
                _check_key(key, f"{what} of {self.origin}")
        for key in self.allowed or ():
            _check_key(key, f"allowed client key of {self.origin}")
        if self.allowed is not None and not self.allowed:
            raise CurveError(
                f"{self.origin}: no allowed client keys; a CURVE server would refuse every "
                "client (expected at least one client public key)."
            )
        zmq = _zmq()
        if zmq.curve_public(self.secret_key) != self.public_key:
            raise CurveError(
                f"{self.origin}: the public key does not belong to the secret key "
                "(expected the pair written together by 'beatwise keys')."
            )

    @classmethod
    def load(
        cls,
        secret: str | os.PathLike,
        *,
        server_key: str | os.PathLike | None = None,
        allow: str | os.PathLike | None = None,
    ) -> CurveKeys:
        """Read our key pair, and whom we trust, from files.

        Args:
            secret: Our secret key file (``NAME.key_secret``).
            server_key: The server's public key file (``SERVER.key``), to secure client
                sockets. Default None.
            allow: Folder of the accepted clients' public key files (``*.key``), to secure
                server sockets. Default None.
        """
        public, secret_key = read_keypair(secret)
        origin = f"secret key file {secret}"
        if server_key is not None:
            origin += f", server key file {server_key}"
        if allow is not None:
            origin += f", allowed-clients folder {allow}"
        return cls(
            public,
            secret_key,
            None if server_key is None else read_public_key(server_key),
            None if allow is None else read_allowed(allow),
            origin,
        )


def _zmq() -> Any:
    import zmq

    if not zmq.has("curve"):
        raise CurveError(
            f"this libzmq ({zmq.zmq_version()}) has no CURVE support (zmq.has('curve') is "
            "False); expected a pyzmq wheel, which bundles libsodium."
        )
    return zmq


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != _KEY_CHARS or not set(key) <= _Z85:
        shown = key[:60] if isinstance(key, (bytes, str)) else type(key).__name__
        raise CurveError(
            f"{what}: {shown!r} is not a CURVE key (expected {_KEY_CHARS} Z85 characters, "
            "as 'beatwise keys' writes them)."
        )


def _read_cert(path: str | os.PathLike) -> tuple[bytes | None, bytes | None]:
    """``(public, secret)`` keys of a ZeroMQ certificate file (None where absent)."""
    p = Path(path)
    if not p.is_file():
        raise CurveError(
            f"key file {p}: {'a folder' if p.is_dir() else 'not found'} (expected a file "
            f"written by 'beatwise keys': NAME{PUBLIC_SUFFIX} or NAME{SECRET_SUFFIX})."
        )
    try:
        lines = p.read_bytes().splitlines()
    except OSError as exc:
        raise CurveError(f"key file {p}: cannot be read ({exc.strerror}).") from None
    keys: dict[bytes, bytes] = {}
    for line in lines:
        name, eq, value = line.strip().partition(b"=")
        if eq and name.strip() in (b"public-key", b"secret-key"):
            keys.setdefault(name.strip(), value.strip(b" \t'\""))
    return keys.get(b"public-key"), keys.get(b"secret-key")


def _public(public: bytes | None, path: str | os.PathLike) -> bytes:
    if public is None:
        raise CurveError(
            f"key file {path}: no 'public-key = \"...\"' line (expected a ZeroMQ certificate "
            f"such as NAME{PUBLIC_SUFFIX} from 'beatwise keys')."
        )
    _check_key(public, f"public key in {path}")
    return public


def read_public_key(path: str | os.PathLike) -> bytes:
    """The public key (Z85) in a key file (``NAME.key``, or ``NAME.key_secret``)."""
    return _public(_read_cert(path)[0], path)


def read_keypair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """``(public, secret)`` keys (Z85) in a secret key file (``NAME.key_secret``)."""
    public, secret = _read_cert(path)
    public = _public(public, path)
    if secret is None:
        raise CurveError(
            f"key file {path}: holds no secret key (expected NAME{SECRET_SUFFIX}, the secret "
            f"half written by 'beatwise keys'; NAME{PUBLIC_SUFFIX} is the public half)."
        )
    _check_key(secret, f"secret key in {path}")
    return public, secret


def read_allowed(folder: str | os.PathLike) -> frozenset[bytes]:
    """Public keys (Z85) of the ``*.key`` files in ``folder``: the clients a server accepts.

    Read once: a key added to the folder later takes effect at the next start.
    """
    d = Path(folder)
    if not d.is_dir():
        raise CurveError(
            f"allowed-clients folder {d}: {'a file' if d.exists() else 'not found'} (expected "
            f"a folder of client public key files, *{PUBLIC_SUFFIX})."
        )
    keys = frozenset(read_public_key(f) for f in sorted(d.glob(f"*{PUBLIC_SUFFIX}")))
    if not keys:
        raise CurveError(
            f"allowed-clients folder {d}: no *{PUBLIC_SUFFIX} files, so every client would be "
            f"refused (expected the clients' public keys, NAME{PUBLIC_SUFFIX})."
        )
    return keys


def write_keypair(
    folder: str | os.PathLike, name: str, *, force: bool = False
) -> tuple[Path, Path]:
    """Make a key pair and write it as ``folder/name.key`` (public) and
    ``folder/name.key_secret`` (secret, mode 0600).

    Args:
        folder: Where to write (made if missing).
        name: File name stem, e.g. ``"replay"``.
        force: Replace an existing pair. Default False (refuse).

    Returns:
        ``(public file, secret file)``.
    """
    if not name or not name.isprintable() or name.startswith(".") or any(c in name for c in "/\\"):
        raise CurveError(
            f"key name {name!r}: expected a plain file name (printable, no path separators, "
            "not starting with '.'), e.g. 'replay'."
        )
    zmq = _zmq()
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"
    existing = [str(p) for p in (public_file, secret_file) if p.exists()]
    if existing and not force:
        raise CurveError(
            f"key files {', '.join(existing)} already exist; refusing to overwrite them (a "
            "replaced key locks out whoever trusts the old one). Use --force to replace them."
        )
    public, secret = zmq.curve_keypair()
    stamp = "#   ****  Generated by beatwise keys  ****\n"
    _write_new(
        public_file,
        stamp + "#   ZeroMQ CURVE Public Certificate: give it to the other side.\n\n"
        f'metadata\ncurve\n    public-key = "{public.decode()}"\n',
        0o644,
    )
    _write_new(
        secret_file,
        stamp + "#   ZeroMQ CURVE **Secret** Certificate: do not share it.\n\n"
        f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
        f'    secret-key = "{secret.decode()}"\n',
        0o600,
    )
    return public_file, secret_file


def _write_new(path: Path, text: str, mode: int) -> None:
    # Created with its final mode (O_EXCL, after removing any old file, which would keep its
    # own mode), so the secret is never readable by others, not even for a moment.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


# -- sockets ---------------------------------------------------------------------------------

_lock = threading.Lock()
_authenticators: dict[Any, Any] = {}  # context -> ThreadAuthenticator


class _AllowedKeys:
    """ZAP credentials provider: accepts exactly the given client public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def _authenticator(context: Any) -> Any:
    """The context's ZAP handler, started on first use (ZeroMQ allows one per context)."""
    from zmq.auth.thread import ThreadAuthenticator

    with _lock:
        auth = _authenticators.get(context)
        if auth is None:
            auth = _authenticators[context] = ThreadAuthenticator(context)
            auth.start()
        return auth


def stop_authenticator(context: Any) -> None:
    """Stop the ZAP handler :func:`secure_server` started on ``context`` (if any).

    Call it before ``context.term()``: the handler's sockets would keep the context open.
    """
    with _lock:
        auth = _authenticators.pop(context, None)
    if auth is not None:
        auth.stop()


def secure_server(socket: Any, keys: CurveKeys | None) -> None:
    """Make ``socket`` a CURVE server that accepts only ``keys.allowed``; call before bind.

    Args:
        socket: A ZeroMQ socket (PUB, ROUTER, ...), not yet bound.
        keys: Our key pair and the allowed client keys; None: leave the socket as it is.
    """
    if keys is None:
        return
    if keys.allowed is None:
        raise CurveError(
            f"CURVE server socket with {keys.origin}: no allowed client keys (expected an "
            "allowed-clients folder, --curve-allow)."
        )
    _zmq()
    # Each allowed-key set gets its own ZAP domain, so servers in one process (replay and
    # consumer in a test or the demo) each keep their own list on the shared handler.
    domain = "beatwise-" + hashlib.sha256(b"".join(sorted(keys.allowed))).hexdigest()[:16]
    _authenticator(socket.context).configure_curve_callback(domain, _AllowedKeys(keys.allowed))
    socket.zap_domain = domain.encode()
    socket.curve_secretkey = keys.secret_key
    socket.curve_publickey = keys.public_key
    socket.curve_server = True


def secure_client(socket: Any, keys: CurveKeys | None) -> None:
    """Make ``socket`` a CURVE client of the server ``keys.server_key``; call before connect.

    Args:
        socket: A ZeroMQ socket (SUB, DEALER, ...), not yet connected.
        keys: Our key pair and the server's public key; None: leave the socket as it is.
    """
    if keys is None:
        return
    if keys.server_key is None:
        raise CurveError(
            f"CURVE client socket with {keys.origin}: no server public key (expected the "
            "server's NAME.key, --curve-server-key)."
        )
    _zmq()
    socket.curve_secretkey = keys.secret_key
    socket.curve_publickey = keys.public_key
    socket.curve_serverkey = keys.server_key
