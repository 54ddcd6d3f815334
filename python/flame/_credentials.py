"""Which credentials a client uses for an address (#11), and the credentials file.

Lookup order (the first that exists):

1. ``token=`` given to :func:`flame.init` / :func:`flame.connect`; for the embedded cluster
   this process started, its own token; then ``$FLAME_TOKEN``;
2. the entry for the address in ``~/.flame/credentials`` (written by ``flame login``);
3. for a loopback address, ``<state_dir>/admin.token`` of the head, where ``state_dir`` is
   what the head's ``Discover`` tells a caller on its own machine — readable only by the OS
   user who runs the head, so ``flame-daemon start`` + ``flame.init("http://127.0.0.1:8080")``
   work without copying tokens, for that user only.

The CA of an ``https://`` head: ``ca=``, ``$FLAME_CA_FILE``, the credentials entry, or pinned
on first contact by the token's fingerprint (in the native client).

The credentials file is TOML, mode 0600, one table per address::

    ["https://head.example:8080"]
    token = "flame_user_..."
    ca_pem = "-----BEGIN CERTIFICATE-----\\n..."

A file that group or others may read is refused (the tokens in it may have leaked).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (a dependency on these versions)
    import tomli as tomllib

from flame import errors

TOKEN_ENV = "FLAME_TOKEN"
CA_FILE_ENV = "FLAME_CA_FILE"
CERT_FILE_ENV = "FLAME_CERT_FILE"
ADMIN_TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class Found:
    """What the lookup found: ``token`` and ``ca_pem`` (``None``: not found), and where the
    token came from (for error messages)."""

    token: str | None = None
    ca_pem: str | None = None
    source: str = ""


def credentials_path() -> Path:
    """``~/.flame/credentials`` (``$HOME`` is honoured, so tests can use a temp home)."""
    return Path(os.path.expanduser("~")) / ".flame" / "credentials"


def canonical(address: str) -> str:
    """The key of an address in the credentials file: ``scheme://host:port``."""
    a = address.strip().rstrip("/")
    if "://" not in a:
        a = "http://" + a
    scheme, rest = a.split("://", 1)
    return f"{scheme.lower()}://{rest.lower()}"


def is_loopback(address: str) -> bool:
    """Whether the address names this machine (127.0.0.0/8, ::1, localhost)."""
    rest = canonical(address).split("://", 1)[1]
    host = rest.rsplit(":", 1)[0] if not rest.startswith("[") else rest[1:].split("]")[0]
    return host in ("localhost", "::1") or host.startswith("127.")


def read_file(path: Path | None = None) -> dict[str, dict[str, str]]:
    """The entries of the credentials file (empty if there is none).

    Raises:
        flame.AuthenticationError: the file is readable by group or others (naming the file
            and the fix), or it is not valid TOML.
    """
    path = path or credentials_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise errors.AuthenticationError(
            f"{path} has mode {stat.S_IMODE(mode):o}: group or others may read the tokens in "
            f"it, so it is not used. If nobody else read it, `chmod 600 {path}`; otherwise "
            f"have the tokens revoked and run `flame login` again"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise errors.AuthenticationError(f"cannot read the credentials file {path}: {e}") from e
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def write_entry(address: str, token: str, ca_pem: str | None, path: Path | None = None) -> Path:
    """Add or replace the entry of ``address``; the file is written 0600 (its directory
    0700) under a temporary name and renamed into place. Returns the file's path."""
    path = path or credentials_path()
    entries = read_file(path)
    entry = {"token": token}
    if ca_pem:
        entry["ca_pem"] = ca_pem
    entries[canonical(address)] = entry
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = []
    for key in sorted(entries):
        # JSON strings are valid TOML basic strings (same escapes).
        lines.append(f"[{json.dumps(key)}]")
        for k, v in sorted(entries[key].items()):
            lines.append(f"{k} = {json.dumps(str(v))}")
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _ca_text(ca: str) -> str:
    """``ca=`` is PEM text or the path of a PEM file."""
    if "-----BEGIN" in ca:
        return ca
    try:
        return Path(ca).read_text()
    except OSError as e:
        raise errors.InvalidArgumentError(f"ca={ca!r}: cannot read the CA file: {e}") from e


def _admin_token(address: str, timeout: float) -> Found:
    """The head's ``admin.token``, if the head is on this machine and this user may read it."""
    from flame import _core

    discover = getattr(_core, "discover", None)
    if discover is None:
        return Found()
    try:
        info = discover(address, min(timeout, 2.0))
    except errors.FlameError:
        return Found()  # an older head, or none: connecting will say what is wrong
    state_dir = info.get("state_dir") or ""
    if not state_dir:
        return Found()
    path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except OSError:
        return Found()  # another user's head: no token for us
    return Found(token=token or None, source=str(path)) if token else Found()


def _embedded_token(address: str) -> str | None:
    """The token of the embedded cluster this process runs at ``address``, if it does."""
    from flame import api

    rt = api._runtime
    cluster = None if rt is None else rt.cluster
    if cluster is None or canonical(cluster.address) != canonical(address):
        return None
    return rt.token if rt is not None else None


def lookup(
    address: str,
    token: str | None = None,
    ca: str | None = None,
    *,
    timeout: float = 5.0,
    use_file: bool = True,
    use_admin_token: bool = True,
) -> Found:
    """The credentials to connect to ``address`` with (see the module docs for the order).

    Raises:
        flame.AuthenticationError: the credentials file may be read by others.
        flame.InvalidArgumentError: ``ca`` names a file that cannot be read.
    """
    ca_pem = _ca_text(ca) if ca else None
    # With $FLAME_CA_FILE set, the native side reads it (and names it in errors).
    ca_known = ca_pem is not None or bool(os.environ.get(CA_FILE_ENV))
    entry: dict[str, str] = {}
    if use_file and not (token and ca_known):
        entry = read_file().get(canonical(address), {})
    if not ca_known:
        ca_pem = entry.get("ca_pem") or None
    if token:
        return Found(token.strip(), ca_pem, "token=")
    own = _embedded_token(address)
    if own:
        return Found(own, ca_pem, "this process's embedded cluster")
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return Found(env, ca_pem, f"${TOKEN_ENV}")
    if entry.get("token"):
        return Found(entry["token"], ca_pem, f"{credentials_path()} [{canonical(address)}]")
    # A node's executors authenticate with its certificate; nothing more to find.
    if use_admin_token and is_loopback(address) and not os.environ.get(CERT_FILE_ENV):
        found = _admin_token(address, timeout)
        if found.token:
            return Found(found.token, ca_pem, found.source)
    return Found(None, ca_pem, "")


def login_hint(address: str) -> str:
    """What to do about a missing or refused token."""
    a = canonical(address)
    return f"run `flame login {a}`, set ${TOKEN_ENV}, or pass token="
