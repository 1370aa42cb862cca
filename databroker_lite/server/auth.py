"""User logins and per-proposal access for ``databroker-lite serve``, on tiled's machinery.

Nothing here authenticates by itself: tiled does (its token and API-key routes, its
authentication database of sessions and per-user keys). This module gives tiled

- :class:`PasswordFileAuthenticator`, a tiled ``InternalAuthenticator`` for a small
  site: a users file of argon2id hashes (``argon2-cffi``), one ``name:hash`` a line;
- :class:`ProposalAccessPolicy`, a tiled ``AccessPolicy``: a user reads the runs of
  their proposals (the start document's ``proposal_id``, or the key the site names);
  staff read all. It filters a catalog with an index query, so a run a user may not
  read is absent from listings, counts, searches and look-ups (404, as if it did not
  exist);
- :func:`load_serve_config`, the ``--config`` file of ``databroker-lite serve``.
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from tiled.access_control.access_policies import ALL_ACCESS, NO_ACCESS
from tiled.access_control.protocols import AccessPolicy
from tiled.access_control.scopes import NO_SCOPES, PUBLIC_SCOPES
from tiled.queries import In

from ..errors import ServerConfigError
from .users import (  # noqa: F401 - their home was here; configs name auth:PasswordFileAuthenticator
    PasswordFileAuthenticator,
    _Reloading,
    hash_password,
    read_users_file,
    remove_user,
    set_password,
)

__all__ = ["PasswordFileAuthenticator", "ProposalAccessPolicy", "ServeConfig",
           "hash_password", "load_serve_config", "remove_user", "set_password"]

logger = logging.getLogger(__name__)

#: tiled's ``--config`` name for our authenticator and policy
AUTHENTICATOR = "databroker_lite.server.auth:PasswordFileAuthenticator"
POLICY = "databroker_lite.server.auth:ProposalAccessPolicy"
READ_SCOPES = frozenset(PUBLIC_SCOPES)  # read:metadata, read:data: the server is read-only


def _names(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ServerConfigError(f"{where}: expected a list of names, got {value!r}")
    return [str(v) for v in value]


@dataclass(frozen=True)
class Policy:
    """Who reads what: proposals per user and per group, and staff (who read everything)."""

    key: str = "proposal_id"
    staff: frozenset[str] = frozenset()
    users: Mapping[str, frozenset[str]] = field(default_factory=dict)
    provider: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Policy:
        if not isinstance(d, Mapping):
            raise ServerConfigError(f"{where}: the access policy is a mapping (key, staff, "
                                    f"users, groups), got {type(d).__name__}")
        unknown = set(d) - {"key", "staff", "users", "groups", "provider", "policy_file"}
        if unknown:
            raise ServerConfigError(f"{where}: unknown access policy entries {sorted(unknown)}; "
                                    "known: key, staff, users, groups, provider")
        key = d.get("key", "proposal_id")
        if not isinstance(key, str) or not key or key.startswith("$") or ".." in key:
            raise ServerConfigError(f"{where}: 'key' is the start-document key holding the "
                                    f"proposal (e.g. proposal_id), got {key!r}")
        staff = set(_names(d.get("staff"), f"{where}: staff"))
        users: dict[str, set[str]] = {}
        raw_users = d.get("users") or {}
        if not isinstance(raw_users, Mapping):
            raise ServerConfigError(f"{where}: 'users' maps user names to lists of proposals")
        for name, props in raw_users.items():
            users.setdefault(str(name), set()).update(_names(props, f"{where}: users.{name}"))
        raw_groups = d.get("groups") or {}
        if not isinstance(raw_groups, Mapping):
            raise ServerConfigError(f"{where}: 'groups' maps group names to "
                                    "{members: [...], proposals: [...], staff: true/false}")
        for gname, g in raw_groups.items():
            gwhere = f"{where}: groups.{gname}"
            if not isinstance(g, Mapping) or set(g) - {"members", "proposals", "staff"}:
                raise ServerConfigError(f"{gwhere}: expected {{members: [...], "
                                        "proposals: [...], staff: true/false}")
            members = _names(g.get("members"), f"{gwhere}.members")
            if g.get("staff", False) is True:
                staff.update(members)
            elif g.get("staff", False) is not False:
                raise ServerConfigError(f"{gwhere}.staff: true or false, got {g['staff']!r}")
            for m in members:
                users.setdefault(m, set()).update(_names(g.get("proposals"), f"{gwhere}.proposals"))
        provider = d.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ServerConfigError(f"{where}: 'provider' names one tiled provider, got {provider!r}")
        return cls(key=key, staff=frozenset(staff), provider=provider,
                   users={u: frozenset(p) for u, p in users.items()})

    def _ids(self, principal: Any) -> list[str]:
        return [str(i.id) for i in getattr(principal, "identities", None) or ()
                if self.provider is None or i.provider == self.provider]

    def access(self, principal: Any) -> tuple[bool, frozenset[str]]:
        """(is staff, proposals) of a tiled principal (None: anonymous, reads nothing)."""
        ids = self._ids(principal) if principal is not None else []
        if any(i in self.staff for i in ids):
            return True, frozenset()
        return False, frozenset().union(*(self.users.get(i, frozenset()) for i in ids))

    def query_values(self, proposals: Iterable[str]) -> list:
        """The proposals as the start documents may hold them: "301234" and 301234."""
        out: list = []
        for p in sorted(proposals):
            out.append(p)
            if p.isdigit() and str(int(p)) == p:
                out.append(int(p))
        return out

    def allows_run(self, start: Mapping, proposals: frozenset[str]) -> bool:
        value: Any = start
        for part in self.key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values = value if isinstance(value, list) else [value]
        return any(_proposal_text(v) in proposals for v in values)


def _proposal_text(v: Any) -> str | None:
    """A start document's proposal value as the policy names it; numbers as the index
    compares them (301234.0 is proposal 301234, as the catalog's query finds it)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float):  # the index matches 301234.0 to 301234, and no other float
        return str(int(v)) if v.is_integer() else None
    return str(v) if isinstance(v, (str, int)) else None


def read_policy_file(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ServerConfigError(f"cannot read the access policy {path}: {exc}") from None
    return Policy.from_dict(d, path)


def _is_catalog(node: Any) -> bool:
    from .adapters import CatalogAdapter
    names = {getattr(s, "name", s) for s in getattr(node, "specs", None) or ()}
    return isinstance(node, CatalogAdapter) or bool(
        names & {"databroker_lite_catalog", "CatalogOfBlueskyRuns"})


def _start_of(node: Any) -> Mapping | None:
    md = getattr(node, "metadata", None)
    md = md() if callable(md) else md
    start = md.get("start") if isinstance(md, Mapping) else None
    return start if isinstance(start, Mapping) else None


class ProposalAccessPolicy(AccessPolicy):
    """tiled access policy: users read the runs of their proposals; staff read all.

    Parameters
    ----------
    policy_file : a YAML file holding the policy (read again when it changes; if an
        edit makes it invalid, every request is refused (503) until it is fixed).
    key, staff, users, groups, provider : the policy itself, when there is no file:
        ``key`` is the start-document key of a run's proposal (``proposal_id``);
        ``users`` maps user names to proposals, ``groups`` maps a group to
        ``{members, proposals, staff}``; ``staff`` lists who reads every run;
        ``provider`` limits names to one tiled authentication provider.
    """

    def __init__(self, policy_file: str | None = None, **policy: Any) -> None:
        if policy_file is not None:
            if policy:
                raise ServerConfigError("give the access policy in a file or inline, not both")
            self._file: _Reloading | None = _Reloading(os.path.abspath(policy_file),
                                                       read_policy_file, "the access policy")
            self.policy_path: str | None = self._file.path
            self._fixed: Policy | None = None
        else:
            self._file, self._fixed = None, Policy.from_dict(policy, "access policy")
            self.policy_path = None
        self._accounts: dict[str, _Reloading] = {}

    def bind_users(self, provider: str, users_file: str) -> None:
        """Refuse (401) the sessions and keys of names ``provider`` gave out once they are
        no longer in ``users_file``."""
        self._accounts[provider] = _Reloading(users_file, read_users_file, "the users file")

    def check_still_a_user(self, principal: Any) -> None:
        """Raise a 401 if ``principal`` (anything with ``identities``) has a name a bound
        users file no longer lists."""
        for identity in getattr(principal, "identities", None) or ():
            accounts = self._accounts.get(identity.provider)
            if accounts is None:
                continue
            try:
                known = str(identity.id) in accounts.get()
            except ServerConfigError as exc:
                logger.error("cannot tell who is still a user, refusing: %s", exc)
                known = False
            if not known:
                from fastapi import HTTPException
                raise HTTPException(status_code=401, detail=(
                    f"{identity.id!r} is no longer a user of this server (not in its users "
                    "file): their sessions and API keys are refused"))

    @property
    def policy(self) -> Policy:
        """The policy now in force; while its file is unreadable or invalid, every request
        is refused (503) and the server's log says why."""
        if self._file is None:
            return self._fixed  # type: ignore[return-value]
        try:
            return self._file.get()
        except (OSError, ServerConfigError) as exc:
            from fastapi import HTTPException
            logger.error("access policy unusable, every request is refused: %s", exc)
            raise HTTPException(status_code=503, detail="the server's access policy is "
                                "unusable (its log says why); nothing is served until it is "
                                "fixed") from None

    async def init_node(self, principal: Any, authn_access_tags: Any, authn_scopes: Any,
                        access_tags: Any = None) -> tuple[bool, Any]:
        raise ValueError("the catalogs are served read-only; nothing can be created")

    async def allowed_scopes(self, node: Any, principal: Any, authn_access_tags: Any,
                             authn_scopes: Any) -> frozenset:
        policy = self.policy
        if principal is None:
            return NO_SCOPES
        self.check_still_a_user(principal)
        staff, proposals = policy.access(principal)
        if staff:
            return READ_SCOPES
        start = _start_of(node)
        if start is not None and not policy.allows_run(start, proposals):
            return NO_SCOPES  # a run reached any other way than through its catalog: 404
        return READ_SCOPES

    async def filters(self, node: Any, principal: Any, authn_access_tags: Any,
                      authn_scopes: Any, scopes: Any) -> Any:
        policy = self.policy
        if principal is None:
            return NO_ACCESS
        if not set(scopes) <= READ_SCOPES:
            return NO_ACCESS
        self.check_still_a_user(principal)
        staff, proposals = policy.access(principal)
        if staff or not _is_catalog(node):
            return ALL_ACCESS
        # One more condition in the catalog's index query (``{key: {"$in": [...]}}``).
        return [In(f"start.{policy.key}", policy.query_values(proposals))]


# --- a removed user on tiled's own routes --------------------------------------------
def refuse_removed_users(app: Any, policy: ProposalAccessPolicy) -> None:
    """Refuse (401) a user no longer in the users file on every route of ``app``.

    The access policy is asked only on the data routes; tiled's session and key routes
    (``/auth/whoami``, making, listing or revoking keys, ``/auth/session/refresh``, the
    key's own record) find the user from a token or key without it, so a removed user's
    session or key still worked there until it expired. Here every dependency that gives
    the current user checks them, as do the two routes that take none (refresh, the key's
    record). The checks are written into the routes' dependency trees (as
    ``server.app._apply_dependency_overrides`` writes tiled's): FastAPI's own
    ``dependency_overrides`` would cost every request. ``POST /auth/session/revoke``
    (given a refresh token, it only ends that session) stays open.
    """
    import functools

    from tiled.server import authentication as authn

    def checked(call: Any) -> Any:
        @functools.wraps(call)
        async def principal_still_a_user(*args: Any, **kwargs: Any) -> Any:
            principal = await call(*args, **kwargs)
            if principal is not None:
                policy.check_still_a_user(principal)
            return principal
        return principal_still_a_user

    def refreshed(call: Any) -> Any:
        @functools.wraps(call)
        async def refresh_of_a_user(**kwargs: Any) -> Any:
            tokens = await call(**kwargs)  # the session's user is in the token it made
            payload = authn.decode_token(tokens["access_token"], kwargs["settings"].secret_keys)
            policy.check_still_a_user(_Identities(payload.get("ids") or ()))
            return tokens
        return refresh_of_a_user

    def key_record(call: Any) -> Any:
        @functools.wraps(call)
        async def record_of_a_users_key(**kwargs: Any) -> Any:
            response = await call(**kwargs)  # a valid key, or it raised
            async with kwargs["db_factory"]() as db:
                key = await authn.lookup_valid_api_key(db, bytes.fromhex(kwargs["api_key"]))
                if key is not None:
                    policy.check_still_a_user(key.principal)
            return response
        return record_of_a_users_key

    principal_deps = {f: checked(f) for f in (authn.get_current_principal,
                                              authn.get_current_principal_websocket)}
    endpoints = {("POST", "/session/refresh"): refreshed, ("GET", "/apikey"): key_record}
    seen: set[int] = set()
    found = set()
    for route in _served_routes(app.router.routes):
        dependant = route.dependant
        replace_dependencies(dependant, principal_deps, seen)
        for (method, tail), wrap in endpoints.items():
            if (method in (getattr(route, "methods", None) or ())
                    and getattr(route, "path", "").endswith("/auth" + tail)):
                dependant.call = wrap(dependant.call)
                found.add((method, tail))
    if found != set(endpoints):  # a tiled that moved them: fail at startup, not open
        raise ServerConfigError(f"tiled's routes {sorted(set(endpoints) - found)} were not "
                                "found to guard against removed users; this tiled version "
                                "is not one databroker_lite supports")


def replace_dependencies(dependant: Any, replace: Mapping[Any, Any], seen: set[int]) -> None:
    """Every dependency of a FastAPI ``dependant`` (its whole tree) whose callable is a
    key of ``replace`` calls the value instead; ``seen``: the dependants already done."""
    if dependant is None or id(dependant) in seen:
        return
    seen.add(id(dependant))
    for sub in dependant.dependencies:
        if sub.call in replace:
            sub.call = replace[sub.call]
        replace_dependencies(sub, replace, seen)


def _served_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes that answer requests, each with the ``dependant`` its handler runs.

    FastAPI from 0.16x keeps an included router as one entry and builds its routes (with
    dependency trees of their own, not the router's) when first asked for them, once;
    older versions copy them into the app's list.
    """
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _served_routes(candidates())
            continue
        for target in (route, getattr(route, "starlette_route", None)):
            if getattr(target, "dependant", None) is not None:
                yield target
                break


class _Identities:
    """The identities a tiled access token names (``ids``), as a principal has them."""

    def __init__(self, ids: Iterable[Mapping]) -> None:
        from types import SimpleNamespace
        self.identities = [SimpleNamespace(id=i.get("id"), provider=i.get("idp")) for i in ids]


# --- the --config file of ``databroker-lite serve`` ------------------------------------
_CONFIG_KEYS = {"authentication", "database", "secret_keys_file", "access"}


@dataclass
class ServeConfig:
    """What ``serve --config`` hands to tiled: authentication, its database, the policy."""

    path: str
    authentication: Any  # tiled.config.Authentication
    database_uri: str
    access_policy: ProposalAccessPolicy
    users_file: str | None = None

    def server_settings(self) -> dict:
        from tiled.config import Database
        return {"database": Database(uri=self.database_uri, init_if_not_exists=True)}

    def describe(self) -> str:
        """One line for the console: where logins and the policy come from (no secrets)."""
        names = ", ".join(p.provider for p in self.authentication.providers)
        users = f" (users in {self.users_file})" if self.users_file else ""
        policy = self.access_policy.policy_path or self.path
        return f"logins: {names}{users}; access policy from {policy}"


def _beside(base: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ServerConfigError(f"{base}: {what} is a file name, got {value!r}")
    return os.path.join(os.path.dirname(base), os.path.expanduser(value))


def _secret_keys(path: str) -> list[str]:
    """The keys that sign tiled's tokens, from ``path``; made (mode 600) when missing."""
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    if os.name == "posix" and os.stat(path).st_mode & 0o077:
        raise ServerConfigError(f"{path} signs every login token but others can read it: "
                                f"chmod 600 {path}")
    with open(path, encoding="utf-8") as f:
        keys = [line.strip() for line in f if line.strip()]
    if not keys or not all(k.isalnum() for k in keys):
        raise ServerConfigError(f"{path}: one secret key a line, letters and digits only")
    return keys


def load_serve_config(path: str | os.PathLike) -> ServeConfig:
    """Read a ``serve --config`` YAML file; relative file names are beside it.

    Sections: ``authentication`` (tiled's own: ``providers``, ``tiled_admins``, token
    and session ages, with ``${VAR}`` taken from the environment; default provider: a
    users file ``users.txt``), ``database``
    (tiled's authentication database; default ``auth.sqlite``), ``secret_keys_file``
    (default ``secret_keys``, made when missing) and ``access`` (the policy, inline
    or as ``policy_file``; required).
    """
    from pydantic import ValidationError
    from tiled.config import Authentication
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ServerConfigError(f"cannot read the serve config {path}: {exc}") from None
    if not isinstance(d, Mapping) or set(d) - _CONFIG_KEYS:
        extra = sorted(set(d) - _CONFIG_KEYS) if isinstance(d, Mapping) else d
        raise ServerConfigError(f"{path}: unknown entries {extra}; a serve config has "
                                f"{sorted(_CONFIG_KEYS)}")
    from tiled.utils import expand_environment_variables
    authn = d.get("authentication") or {}
    if not isinstance(authn, Mapping):
        raise ServerConfigError(f"{path}: authentication is a mapping (tiled's section)")
    authn = dict(expand_environment_variables(dict(authn)))  # ${VAR}, as tiled's config does
    if authn.get("allow_anonymous_access"):
        raise ServerConfigError(f"{path}: allow_anonymous_access is not supported: every "
                                "request must come from a user the access policy names")
    if "single_user_api_key" in authn:
        raise ServerConfigError(f"{path}: single_user_api_key is for --api-key-file mode; "
                                "with logins each user makes their own keys")
    users_file = None
    password_providers: dict[str, str] = {}
    providers = authn.get("providers")
    if providers is None:
        providers = [{"provider": "local", "authenticator": AUTHENTICATOR,
                      "args": {"path": "users.txt"}}]
    if not isinstance(providers, list) or not providers:
        raise ServerConfigError(f"{path}: authentication.providers is a non-empty list of "
                                "{provider, authenticator, args}")
    resolved = []
    for p in providers:
        p = dict(p) if isinstance(p, Mapping) else p
        if isinstance(p, dict) and p.get("authenticator") == AUTHENTICATOR:
            args = dict(p.get("args") or {})
            args["path"] = users_file = _beside(path, args.get("path", "users.txt"),
                                                "the users file")
            p["args"] = args
            password_providers[str(p.get("provider"))] = users_file
        resolved.append(p)
    authn["providers"] = resolved
    if "secret_keys" not in authn:
        authn["secret_keys"] = _secret_keys(_beside(path, d.get("secret_keys_file", "secret_keys"),
                                                    "secret_keys_file"))
    authn["allow_anonymous_access"] = False
    try:
        authentication = Authentication(**authn)
        authentication.authenticators  # noqa: B018 - builds them: a bad file fails now
    except ServerConfigError:
        raise
    except (ValidationError, ValueError, TypeError, ImportError, OSError) as exc:
        raise ServerConfigError(f"{path}: authentication: {exc}") from None
    db = d.get("database", "auth.sqlite")
    if not isinstance(db, str) or not db:
        raise ServerConfigError(f"{path}: database is a file name or a SQLAlchemy URI")
    uri = db if "://" in db else "sqlite:///" + _beside(path, db, "database")
    access = d.get("access")
    if not isinstance(access, Mapping):
        raise ServerConfigError(f"{path}: needs an 'access' section: the policy (key, staff, "
                                "users, groups) or policy_file: FILE; to let every user read "
                                "everything, list them under staff")
    access = dict(access)
    if "policy_file" in access:
        access["policy_file"] = _beside(path, access["policy_file"], "access.policy_file")
    policy = ProposalAccessPolicy(**access)
    for provider, users in password_providers.items():
        policy.bind_users(provider, users)
    return ServeConfig(path=path, authentication=authentication, database_uri=uri,
                       access_policy=policy, users_file=users_file)
