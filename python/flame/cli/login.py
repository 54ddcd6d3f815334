"""``flame login ADDRESS [--token T]``: check a token against a daemon and keep it.

The token (from ``--token`` or typed at a hidden prompt) is checked with a real,
authenticated call; for an ``https://`` daemon the connection pins the cluster CA by the
token's fingerprint. Both go into ``~/.flame/credentials`` (0600) under the address, where
``flame.init(address)``, ``flame.connect`` and the ``flame`` CLI find them.
"""

from __future__ import annotations

import getpass
import sys

from flame import _credentials, errors


def run(address: str, token: str | None) -> int:
    """Log in; returns the exit code (see :mod:`flame.cli`)."""
    from flame.cli import EXIT_OK, EXIT_UNAUTHENTICATED, EXIT_UNREACHABLE, EXIT_USAGE
    from flame.client import _open

    if not token:
        try:
            token = getpass.getpass(f"Token for {address}: ")
        except (EOFError, KeyboardInterrupt):
            print("flame login: no token given", file=sys.stderr)
            return EXIT_USAGE
    token = token.strip()
    if not token:
        print("flame login: no token given (use --token or type it at the prompt)", file=sys.stderr)
        return EXIT_USAGE
    try:
        # Only this token, and a CA pinned afresh by its fingerprint (a stale entry's CA
        # must not decide whether the new token works).
        found = _credentials.Found(token=token, source="--token")
        conn = _open(address, 5.0, "flame-login", found)
    except errors.AuthenticationError as e:
        print(f"flame login: {address} refused the token: {e}", file=sys.stderr)
        return EXIT_UNAUTHENTICATED
    except errors.ConnectionError as e:
        print(f"flame login: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except errors.InvalidArgumentError as e:
        print(f"flame login: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        ca_pem = conn.ca_pem
    finally:
        conn.close()
    path = _credentials.write_entry(address, token, ca_pem)
    pinned = " and the cluster CA" if ca_pem else ""
    print(f"logged in to {_credentials.canonical(address)}; token{pinned} saved in {path}")
    return EXIT_OK
