"""The users file of ``databroker-lite serve --config``: argon2id hashes, one
``name:hash`` a line, and the tiled authenticator that checks logins against it."""
from __future__ import annotations

import getpass
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from tiled.server.protocols import InternalAuthenticator, UserSessionState

from ..errors import ServerConfigError

__all__ = ["PasswordFileAuthenticator", "Throttle", "hash_password", "read_users_file",
           "remove_user", "set_password"]

logger = logging.getLogger("databroker_lite.server.auth")


# --- password hashes (argon2id, as argon2-cffi's PasswordHasher makes them) ------------
def _hasher() -> Any:
    from argon2 import PasswordHasher
    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; the PHC string, ``$argon2id$v=19$...``)."""
    if not isinstance(password, str) or not password:
        raise ServerConfigError("a password is a non-empty string")
    return _hasher().hash(password)


def _check_name(name: str, where: str) -> None:
    if not name or name != name.strip() or any(c in name for c in ":\n\r\t ") \
            or not name.isprintable():
        raise ServerConfigError(f"{where}: user name {name!r} must be non-empty, printable, "
                                "without spaces or ':'")


def read_users_file(path: str) -> dict[str, str]:
    """``{name: argon2 hash}`` from a users file (``name:hash`` lines; ``#`` comments)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerConfigError(f"cannot read the users file {path}: {exc}") from None
    users: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        where = f"{path}, line {n}"
        if not sep or not hashed.startswith("$argon2"):
            raise ServerConfigError(f"{where}: expected 'name:$argon2id$...' (make lines with "
                                    "'databroker-lite passwd USERS_FILE NAME')")
        _check_name(name, where)
        if name in users:
            raise ServerConfigError(f"{where}: user {name!r} is listed twice")
        users[name] = hashed.strip()
    return users


def _write_users_file(path: str, users: Mapping[str, str]) -> None:
    text = "".join(f"{name}:{hashed}\n" for name, hashed in users.items())
    tmp = f"{path}.{secrets.token_hex(4)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def set_password(path: str | os.PathLike, name: str, password: str | None = None) -> None:
    """Add user ``name`` to a users file, or change their password (prompted if None).

    The file is written atomically, readable by its owner only.
    """
    path = os.fspath(path)
    _check_name(name, path)
    users = read_users_file(path) if os.path.exists(path) else {}
    if password is None:
        password = getpass.getpass(f"New password for {name}: ")
        if getpass.getpass("Again: ") != password:
            raise ServerConfigError("the two passwords differ; nothing was changed")
    users[name] = hash_password(password)
    _write_users_file(path, users)


def remove_user(path: str | os.PathLike, name: str) -> None:
    """Remove user ``name`` from a users file; a server using the file refuses their
    sessions and keys from the next request on."""
    path = os.fspath(path)
    users = read_users_file(path)
    if name not in users:
        raise ServerConfigError(f"{path} has no user {name!r}; it has {sorted(users)}")
    del users[name]
    _write_users_file(path, users)


class _Reloading:
    """A file's parsed content, read again when its size or mtime changes."""

    def __init__(self, path: str, parse: Any, what: str) -> None:
        self.path, self._parse, self._what = path, parse, what
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._value: Any = None
        self.get()  # a bad file fails at startup

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ServerConfigError(f"cannot read {self._what} {self.path}: {exc}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._value, self._stamp = self._parse(self.path), stamp
            return self._value


class PasswordFileAuthenticator(InternalAuthenticator):
    """tiled authenticator: user names and argon2id password hashes in a file.

    The file is read again when it changes, so adding a user or changing a password
    needs no restart. An unknown user costs a hash check too (no user enumeration by
    timing). Hash checks run in worker threads, at most ``HASH_SLOTS`` at once (each
    takes 64 MiB), and a name with too many failed logins in a row waits (429).
    """

    def __init__(self, path: str, confirmation_message: str = "") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.confirmation_message = confirmation_message
        self._users = _Reloading(self.path, read_users_file, "the users file")
        self._dummy = hash_password(secrets.token_hex(16))
        self.throttle = Throttle()
        self._slots: Any = None

    def users(self) -> Mapping[str, str]:
        """The users file's names and hashes as they are now."""
        return self._users.get()

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        import anyio
        from fastapi import HTTPException
        name = username if isinstance(username, str) else ""
        wait = self.throttle.wait(name)
        if wait:
            seconds = math.ceil(wait)
            logger.warning("login of %r refused for %d s after failed logins", name, seconds)
            raise HTTPException(status_code=429, headers={"Retry-After": str(seconds)},
                                detail=f"too many failed logins for {name!r} in a row; "
                                f"try again in {seconds} s")
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(HASH_SLOTS)
        state = await anyio.to_thread.run_sync(self._check, username, password,
                                               limiter=self._slots)
        if state is None:
            self.throttle.failed(name)
        else:
            self.throttle.succeeded(name)
        return state

    def _check(self, username: Any, password: Any) -> UserSessionState | None:
        from argon2.exceptions import InvalidHashError, VerificationError
        if not isinstance(username, str) or not isinstance(password, str) or not password:
            return None
        try:
            users = self._users.get()
        except (OSError, ServerConfigError) as exc:
            logger.error("logins refused: %s", exc)  # the path and line, never a hash
            return None
        stored = users.get(username)
        try:
            _hasher().verify(stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return UserSessionState(username, {}) if stored else None


#: password checks at once (argon2id's default takes 64 MiB and ~50 ms of a core)
HASH_SLOTS = 2


class Throttle:
    """Failed logins per user name: the first ``free`` in a row cost nothing more; after
    them each attempt must wait out a lockout that doubles from ``first`` seconds up to
    ``most``. A script guessing one user's password gets a dozen tries an hour; the
    user who mistyped waits seconds. A success clears the name's count."""

    def __init__(self, free: int = 10, first: float = 1.0, most: float = 300.0,
                 names: int = 10_000, clock: Any = time.monotonic) -> None:
        self.free, self.first, self.most, self._names, self._clock = free, first, most, names, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, name: str) -> float:
        """Seconds ``name`` must still wait before its next attempt (0: none)."""
        with self._lock:
            count, until = self._failures.get(name, (0, 0.0))
        return max(0.0, until - self._clock()) if count >= self.free else 0.0

    def failed(self, name: str) -> None:
        with self._lock:
            count = self._failures.pop(name, (0, 0.0))[0] + 1
            over = count - self.free
            lock = min(self.most, self.first * 2 ** over) if over >= 0 else 0.0
            self._failures[name] = (count, self._clock() + lock)
            while len(self._failures) > self._names:  # many names: forget the oldest
                self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
