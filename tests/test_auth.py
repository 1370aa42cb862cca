"""User logins and per-proposal access (issue 19): a real ``serve --config`` in a subprocess.

Two proposals, three users: alice reads proposal 2024-001, bob (through a group) reads
proposal 301234 (an int in the start documents), carol is staff and reads everything,
including a run with no proposal at all; erin can log in but is in no proposal.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import insert_all, make_run_docs, serve_subprocess

import databroker_lite

HAVE_SERVER = all(importlib.util.find_spec(m) is not None
                  for m in ("tiled", "fastapi", "uvicorn", "argon2"))
pytestmark = pytest.mark.skipif(not HAVE_SERVER, reason="needs the server extra")

PASSWORDS = {"alice": "alice-pw-1", "bob": "bøb-pässwörd", "carol": "carol-staff-pw",
             "erin": "erin-has-no-proposal"}
P1, P2 = "2024-001", 301234
POLICY = f"""\
key: proposal_id
staff: [carol]
users:
  alice: ["{P1}"]
groups:
  pass-{P2}: {{members: [bob], proposals: [{P2}]}}
"""


def _make_catalog(path: Path) -> databroker_lite.Catalog:
    cat = databroker_lite.open_catalog(path)
    t0 = time.time() - 100
    runs = [(1, P1), (2, P1), (2, P2), (3, P2), (9, None)]  # scan_id 2 in both proposals
    for i, (sid, prop) in enumerate(runs):
        md = {"scan_id": sid, "plan_name": "count", "sample": f"s{i}"}
        if prop is not None:
            md["proposal_id"] = prop
        insert_all(cat, make_run_docs(5, metadata=md, t0=t0 + i))
    return cat


@contextlib.contextmanager
def _serving(tmp: Path, *catalogs: str):
    """``databroker-lite serve CATALOGS --config tmp/serve.yml``; yields its URL."""
    with serve_subprocess(tmp, *catalogs, "--config", str(tmp / "serve.yml"), wait=120) as url:
        yield url


def _site(tmp: Path) -> None:
    """A small site's files: users (argon2 hashes), the policy, the serve config."""
    from databroker_lite.server.auth import set_password
    for name, pw in PASSWORDS.items():
        set_password(tmp / "users.txt", name, pw)
    (tmp / "policy.yml").write_text(POLICY, encoding="utf-8")
    (tmp / "serve.yml").write_text("access: {policy_file: policy.yml}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """(url, local catalog, site directory)."""
    tmp = tmp_path_factory.mktemp("auth")
    _make_catalog(tmp / "cat")
    _site(tmp)
    with _serving(tmp, str(tmp / "cat")) as url:
        yield url, databroker_lite.open_catalog(tmp / "cat", mode="r"), tmp


def _login(url: str, name: str) -> databroker_lite.remote.RemoteCatalog:
    return databroker_lite.from_uri(url, username=name, password=PASSWORDS[name])


def _expected(local: databroker_lite.Catalog, name: str) -> list[str]:
    if name == "carol":
        return list(local)
    if name == "erin":  # can log in, is in no proposal
        return []
    return list(local.search({"proposal_id": {"alice": P1, "bob": P2}[name]}))


def _others(local: databroker_lite.Catalog, name: str) -> list[str]:
    return [u for u in local if u not in _expected(local, name)]


def test_site_files_hold_no_password(site) -> None:
    _, _, tmp = site
    users = (tmp / "users.txt").read_text(encoding="utf-8")
    assert all(pw not in users for pw in PASSWORDS.values())
    assert all(line.split(":", 1)[1].startswith("$argon2id$") for line in users.splitlines())
    if os.name == "posix":
        assert (tmp / "users.txt").stat().st_mode & 0o777 == 0o600
        assert (tmp / "secret_keys").stat().st_mode & 0o777 == 0o600
    assert (tmp / "auth.sqlite").exists()  # tiled's sessions and keys, beside the config
    log = (tmp / "server.log").read_text(encoding="utf-8", errors="replace")
    assert all(pw not in log for pw in PASSWORDS.values())
    assert (tmp / "secret_keys").read_text().strip() not in log


@pytest.mark.parametrize("name", ["alice", "bob", "carol", "erin"])
def test_each_user_sees_exactly_their_runs(site, name: str) -> None:
    url, local, _ = site
    cat = _login(url, name)
    expected = _expected(local, name)
    assert len(expected) == {"alice": 2, "bob": 2, "carol": 5, "erin": 0}[name]
    assert list(cat) == expected and len(cat) == len(expected)
    assert list(cat.search({"plan_name": "count"})) == expected
    assert list(cat.search({"scan_id": {"$gte": 0}})) == expected
    for uid in expected:
        run = cat[uid]
        assert run.start == local[uid].start
        assert cat[uid[:8]].uid == uid
        np.testing.assert_array_equal(cat.load_array(uid, "primary/x"),
                                      local[uid].primary.read()["x"].values)
    for uid in _others(local, name):
        assert uid not in cat
        with pytest.raises(databroker_lite.RunNotFound):
            cat[uid]
        with pytest.raises(databroker_lite.RunNotFound):
            cat[uid[:8]]
        with pytest.raises(databroker_lite.RunNotFound):
            cat.load_array(uid, "primary/x")
        assert len(cat.search({"uid": uid})) == 0
        assert len(cat.search({"sample": local[uid].start["sample"]})) == 0


def test_scan_id_look_up_sees_only_the_users_runs(site) -> None:
    url, local, _ = site
    alice, bob, carol = (_login(url, n) for n in ("alice", "bob", "carol"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", databroker_lite.DuplicateScanIDWarning)
        assert alice[2].start["proposal_id"] == P1  # the other scan 2 is not hers: no warning
        assert bob[2].start["proposal_id"] == P2
    with pytest.warns(databroker_lite.DuplicateScanIDWarning):
        assert carol[2].uid == bob[2].uid  # staff see both; the newest wins
    for cat, missing in ((alice, 3), (bob, 1), (alice, 9), (bob, 9)):
        with pytest.raises(databroker_lite.RunNotFound, match=f"no run has scan_id {missing}"):
            cat[missing]
    assert carol[9].start.get("proposal_id") is None
    assert alice[-1].uid == _expected(local, "alice")[-1]
    assert bob[-1].uid == _expected(local, "bob")[-1]


def _token(url: str, name: str, password: str):
    import httpx
    return httpx.post(f"{url}/api/v1/auth/provider/local/token",
                      data={"username": name, "password": password})


def _bearer(url: str, name: str) -> dict:
    r = _token(url, name, PASSWORDS[name])
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_others_runs_are_404_on_every_route(site) -> None:
    import httpx
    url, local, _ = site
    headers = _bearer(url, "alice")
    mine, = [u for u in _expected(local, "alice")][:1]
    api = f"{url}/api/v1"
    routes = ["metadata/{uid}", "metadata/{uid}/primary", "metadata/{uid}/primary/data/x",
              "array/full/{uid}/primary/data/x", "array/block/{uid}/primary/data/x?block=0",
              "search/{uid}", "search/{uid}/primary", "documents/{uid}",
              "documents/{uid}?fill=true"]
    for route in routes:
        r = httpx.get(f"{api}/{route.format(uid=mine)}", headers=headers)
        assert r.status_code == 200, (route, r.text)
    for uid in _others(local, "alice"):
        for route in routes:
            r = httpx.get(f"{api}/{route.format(uid=uid)}", headers=headers)
            assert r.status_code == 404, (route, r.status_code, r.text)
            assert local[uid].start["sample"] not in r.text
    listing = httpx.get(f"{api}/search/", headers=headers, params={"page[limit]": 300}).json()
    assert [d["id"] for d in listing["data"]] == _expected(local, "alice")
    assert listing["meta"]["count"] == 2


def test_deep_search_is_refused_not_a_walk_of_every_run(site) -> None:
    import httpx
    url, _, _ = site
    r = httpx.get(f"{url}/api/v1/search-deep/", headers=_bearer(url, "alice"))
    assert r.status_code == 400 and "deep search is not served" in r.text, r.text


def test_several_catalogs_each_filtered(tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx
    tmp = tmp_path_factory.mktemp("auth_multi")
    _make_catalog(tmp / "a")
    _make_catalog(tmp / "b")
    _site(tmp)
    with _serving(tmp, str(tmp / "a"), str(tmp / "b")) as url:
        cats = _login(url, "alice")
        assert sorted(cats) == ["a", "b"]
        for name in ("a", "b"):
            local = databroker_lite.open_catalog(tmp / name, mode="r")
            assert list(cats[name]) == _expected(local, "alice")
            other = _others(local, "alice")[0]
            r = httpx.get(f"{url}/api/v1/metadata/{name}/{other}", headers=_bearer(url, "alice"))
            assert r.status_code == 404
        for path in ("", "a"):
            r = httpx.get(f"{url}/api/v1/search-deep/{path}", headers=_bearer(url, "alice"))
            assert r.status_code == 400 and "deep search is not served" in r.text, r.text
        listing = httpx.get(f"{url}/api/v1/search/b", headers=_bearer(url, "bob")).json()
        assert [d["id"] for d in listing["data"]] == _expected(local, "bob")


def test_wrong_password_unknown_user_and_bad_bytes_are_401(site) -> None:
    import httpx
    url, local, _ = site
    from databroker_lite.remote import Unauthorized
    with pytest.raises(Unauthorized, match="refused the login of 'alice': wrong user name or"):
        databroker_lite.from_uri(url, username="alice", password="not-her-password")
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        databroker_lite.from_uri(url, username="mallory", password="x")
    with pytest.raises(Unauthorized):
        databroker_lite.from_uri(url, username="alice", password=PASSWORDS["bob"])
    for name, pw in [("alice", "ünïcødé-✓"), ("ålice", PASSWORDS["alice"]), ("bob", "bob"),
                     ("alice", "a" * 100_000), ("", "x"), ("alice", ""), ("\x00", "\x00")]:
        r = _token(url, name, pw)
        assert r.status_code in (401, 422), (name[:10], r.status_code, r.text[:200])
        assert "access_token" not in r.text
    assert _token(url, "bob", PASSWORDS["bob"]).status_code == 200  # non-ASCII password
    uid = local[1].uid
    for value in ("Apikey ünïcødé".encode(), b"Apikey 0123abcd", b"Bearer \xff\xfe",
                  b"Bearer not.a.jwt", "Bearer ✓".encode(), b"Basic YWxpY2U6eA=="):
        r = httpx.get(f"{url}/api/v1/metadata/{uid}", headers=[(b"Authorization", value)])
        expected = 400 if value.startswith(b"Basic") else 401  # 400: says which types it takes
        assert r.status_code == expected, (value, r.status_code, r.text[:200])
        assert local[1].start["sample"] not in r.text
    assert httpx.get(f"{url}/api/v1/metadata/{uid}").status_code == 401
    assert httpx.get(f"{url}/api/v1/search/").status_code == 401


def test_the_password_is_prompted_for_when_not_given(site, monkeypatch) -> None:
    import getpass
    url, local, _ = site
    asked = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": asked.append(prompt)
                        or PASSWORDS["alice"])
    cat = databroker_lite.from_uri(url, username="alice")
    assert asked == [f"Password for alice at {url}: "]
    assert list(cat) == _expected(local, "alice")


def test_a_user_key_reads_as_the_user_until_revoked(site) -> None:
    import httpx
    url, local, _ = site
    bob = _login(url, "bob")
    key = bob.create_api_key(note="analysis script")
    scripted = databroker_lite.from_uri(url, api_key=key)
    assert list(scripted) == _expected(local, "bob")
    other = _others(local, "bob")[0]
    with pytest.raises(databroker_lite.RunNotFound):
        scripted[other]
    r = httpx.get(f"{url}/api/v1/metadata/{other}", headers={"Authorization": f"Apikey {key}"})
    assert r.status_code == 404
    bob.revoke_api_key(key)
    from databroker_lite.remote import Unauthorized
    with pytest.raises(Unauthorized):
        databroker_lite.from_uri(url, api_key=key)
    r = httpx.get(f"{url}/api/v1/metadata/", headers={"Authorization": f"Apikey {key}"})
    assert r.status_code == 401


def test_an_expired_key_is_refused(site) -> None:
    import httpx
    url, local, _ = site
    key = _login(url, "alice").create_api_key(expires_in=1)
    headers = {"Authorization": f"Apikey {key}"}
    ok = httpx.get(f"{url}/api/v1/metadata/", headers=headers).status_code
    time.sleep(2.5)  # not a timing assertion: waiting for the key's expiry
    assert httpx.get(f"{url}/api/v1/metadata/", headers=headers).status_code == 401
    assert ok in (200, 401)  # (on a very slow machine the first request may already be late)


def test_databroker2_client_logs_in_at_the_prompt_and_sees_the_same(site, monkeypatch) -> None:
    """databroker 2's client is tiled's from_uri with bluesky-tiled-plugins' classes; it
    prompts for the user name and password, as in the seeds."""
    import tiled.client.context as tctx
    from databroker.client import BlueskyRun, CatalogOfBlueskyRuns
    from tiled.client import from_uri as tiled_from_uri
    url, local, _ = site
    monkeypatch.setenv("TILED_FORCE_PROMPT", "1")
    monkeypatch.setattr(tctx, "username_input", lambda: "bob")
    monkeypatch.setattr(tctx, "password_input", lambda: PASSWORDS["bob"])
    client = tiled_from_uri(url, remember_me=False)
    assert isinstance(client, CatalogOfBlueskyRuns)
    mine = _expected(local, "bob")
    assert list(client) == mine and len(client) == 2
    run = client[2]  # scan_id 2: bob's, not alice's (which is older)
    assert isinstance(run, BlueskyRun) and run.start["proposal_id"] == P2
    np.testing.assert_array_equal(run.primary.read()["x"].values, local[mine[0]].primary.read()["x"].values)
    assert [n for n, _ in client[mine[1]].documents()] == [n for n, _ in local[mine[1]].documents()]
    assert client[-1].start["uid"] == mine[-1]
    for other in _others(local, "bob"):
        with pytest.raises(KeyError):
            client[other]
        with pytest.raises(KeyError):
            client[other[:8]]
    with pytest.raises(KeyError):
        client[1]  # alice's scan_id
    monkeypatch.setattr(tctx, "password_input", lambda: "wrong")
    with pytest.raises(tctx.PasswordRejected):
        tiled_from_uri(url, remember_me=False)


def test_policy_changes_apply_without_restart(site) -> None:
    url, local, tmp = site
    alice = _login(url, "alice")
    policy = tmp / "policy.yml"
    try:
        policy.write_text(POLICY.replace(f'alice: ["{P1}"]', f'alice: ["{P1}", {P2}]'))
        assert list(alice) == list(local.search({"proposal_id": {"$in": [P1, P2]}}))
        policy.write_text(POLICY.replace(f'alice: ["{P1}"]', "alice: []"))
        assert list(alice) == [] and len(alice) == 0  # her session stays, her access goes
        carol = _login(url, "carol")
        policy.write_text("users: [this is not a mapping")
        with pytest.raises(databroker_lite.remote.RemoteError, match="503: the server's access "
                           "policy is unusable"):
            carol[local[1].uid]  # a broken policy refuses everything, even staff
        with pytest.raises(databroker_lite.remote.RemoteError, match="503"):
            _login(url, "carol")
    finally:
        policy.write_text(POLICY)
    assert list(_login(url, "alice")) == _expected(local, "alice")


def test_failed_logins_in_a_row_make_that_name_wait(site) -> None:
    """Ten wrong passwords for one name: its next login, even with the right password,
    is a 429 saying how long to wait (Retry-After); other users log in meanwhile; after
    the wait the right password works and clears the count."""
    from databroker_lite.server.auth import set_password
    url, local, tmp = site
    set_password(tmp / "users.txt", "frank", "frank-pw")  # no restart: the file is re-read
    for _ in range(10):
        assert _token(url, "frank", "guess").status_code == 401
    r = _token(url, "frank", "frank-pw")
    assert r.status_code == 429 and "access_token" not in r.text, r.text
    assert "too many failed logins for 'frank' in a row" in r.json()["detail"]
    assert r.headers["Retry-After"] == "1"
    assert list(_login(url, "alice")) == _expected(local, "alice")
    time.sleep(1.2)
    assert _token(url, "frank", "frank-pw").status_code == 200
    for _ in range(9):  # the success cleared the count: nine more are free
        assert _token(url, "frank", "guess").status_code == 401
    frank = databroker_lite.from_uri(url, username="frank", password="frank-pw")
    assert list(frank) == []  # in no proposal
    for _ in range(10):
        assert _token(url, "frank", "guess").status_code == 401
    t0 = time.monotonic()  # tiled's client waits out a short Retry-After, then logs in
    assert list(databroker_lite.from_uri(url, username="frank", password="frank-pw")) == []
    assert time.monotonic() - t0 >= 0.5


def test_a_removed_user_is_refused_at_once(site) -> None:
    """Taking a name out of the users file ends its sessions and keys at the next request."""
    import httpx

    from databroker_lite.remote import Unauthorized
    from databroker_lite.server.auth import remove_user, set_password
    url, local, tmp = site
    set_password(tmp / "users.txt", "gina", "gina-pw")
    gina = databroker_lite.from_uri(url, username="gina", password="gina-pw")
    key = gina.create_api_key(note="script")
    r = _token(url, "gina", "gina-pw")
    gina_bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert list(databroker_lite.from_uri(url, api_key=key)) == list(gina) == []
    remove_user(tmp / "users.txt", "gina")
    with pytest.raises(Unauthorized, match="'gina' is no longer a user of this server"):
        databroker_lite.from_uri(url, api_key=key)
    with pytest.raises(Unauthorized, match="no longer accepts this session .* log in again"):
        list(gina)  # her session, still within its token's lifetime
    r = httpx.get(f"{url}/api/v1/search/", headers=gina_bearer)
    assert r.status_code == 401 and "'gina' is no longer a user" in r.text
    assert _token(url, "gina", "gina-pw").status_code == 401
    assert list(_login(url, "bob")) == _expected(local, "bob")


def test_a_removed_user_is_refused_on_the_session_routes_too(site) -> None:
    """Not only the data routes: with a session or a key from before, a removed user can
    neither refresh the session, nor ask who they are, nor make or look up a key."""
    import httpx

    from databroker_lite.server.auth import remove_user, set_password
    url, local, tmp = site
    set_password(tmp / "users.txt", "hana", "hana-pw")
    tokens = _token(url, "hana", "hana-pw").json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    auth = f"{url}/api/v1/auth"
    r = httpx.post(f"{auth}/apikey", headers=bearer, json={"expires_in": None, "scopes": ["inherit"], "note": "old"})
    assert r.status_code == 200, r.text
    keyed = {"Authorization": f"Apikey {r.json()['secret']}"}
    asks = {
        "whoami with the session": lambda: httpx.get(f"{auth}/whoami", headers=bearer),
        "whoami with the key": lambda: httpx.get(f"{auth}/whoami", headers=keyed),
        "a new key": lambda: httpx.post(f"{auth}/apikey", headers=bearer,
                                        json={"expires_in": None, "scopes": ["inherit"],
                                              "note": "new"}),
        "the key's own record": lambda: httpx.get(f"{auth}/apikey", headers=keyed),
        "a refreshed session": lambda: httpx.post(
            f"{auth}/session/refresh", json={"refresh_token": tokens["refresh_token"]}),
    }
    before = {what: ask() for what, ask in asks.items()}
    assert {what: r.status_code for what, r in before.items()} == dict.fromkeys(asks, 200)
    assert before["whoami with the session"].json()["identities"][0]["id"] == "hana"
    remove_user(tmp / "users.txt", "hana")
    after = {what: ask() for what, ask in asks.items()}
    assert {what: r.status_code for what, r in after.items()} == dict.fromkeys(asks, 401)
    for what, r in after.items():
        assert "'hana' is no longer a user of this server" in r.json()["detail"], what
        assert "access_token" not in r.text and "secret" not in r.text, what
    assert httpx.get(f"{auth}/whoami", headers=_bearer(url, "bob")).status_code == 200


# --- without a server: the users file, the policy, the config ------------------------
def test_users_file_holds_argon2id_hashes_and_changes_atomically(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from databroker_lite.server.auth import read_users_file, remove_user, set_password
    f = tmp_path / "users.txt"
    set_password(f, "alice", "first")
    set_password(f, "bob", "ünïcødé ✓")
    first = read_users_file(str(f))["alice"]
    set_password(f, "alice", "second")
    users = read_users_file(str(f))
    assert sorted(users) == ["alice", "bob"] and users["alice"] != first
    assert PasswordHasher().verify(users["alice"], "second")
    assert PasswordHasher().verify(users["bob"], "ünïcødé ✓")
    if os.name == "posix":
        assert f.stat().st_mode & 0o777 == 0o600
    remove_user(f, "bob")
    assert sorted(read_users_file(str(f))) == ["alice"]
    assert [p.name for p in tmp_path.iterdir()] == ["users.txt"]  # no partial file left
    with pytest.raises(databroker_lite.errors.ServerConfigError, match="has no user 'bob'"):
        remove_user(f, "bob")
    for bad in ("al ice", "a:b", "", "tab\there"):
        with pytest.raises(databroker_lite.errors.ServerConfigError, match="user name"):
            set_password(f, bad, "pw")
    with pytest.raises(databroker_lite.errors.ServerConfigError, match="non-empty"):
        set_password(f, "carol", "")


@pytest.mark.parametrize("text, match", [
    ("alice:plaintext\n", "line 1: expected 'name:\\$argon2id"),
    ("# users\nalice:$argon2id$x\nalice:$argon2id$y\n", "line 3: user 'alice' is listed twice"),
    ("al ice:$argon2id$x\n", "line 1: user name"),
])
def test_a_bad_users_file_names_its_line(tmp_path: Path, text: str, match: str) -> None:
    from databroker_lite.server.auth import read_users_file
    (tmp_path / "users.txt").write_text(text)
    with pytest.raises(databroker_lite.errors.ServerConfigError, match=match):
        read_users_file(str(tmp_path / "users.txt"))


def test_authenticator_checks_hashes_and_rereads_the_file(tmp_path: Path) -> None:
    import asyncio

    from databroker_lite.server.auth import PasswordFileAuthenticator, set_password
    f = tmp_path / "users.txt"
    set_password(f, "alice", "pw-a")
    auth = PasswordFileAuthenticator(str(f))
    assert asyncio.run(auth.authenticate("alice", "pw-a")).user_name == "alice"
    for name, pw in [("alice", "pw-b"), ("bob", "pw-a"), ("alice", ""), (None, "pw-a"),
                     ("alice", None), ("alice", b"pw-a"), ("ålice", "pw-a")]:
        assert auth._check(name, pw) is None, (name, pw)
    set_password(f, "bob", "pw-b")  # a new user: no restart
    assert auth._check("bob", "pw-b").user_name == "bob"
    f.write_text("garbage\n")  # a broken file refuses logins (and says so in the log)
    assert auth._check("alice", "pw-a") is None
    f.unlink()
    assert auth._check("alice", "pw-a") is None


def _principal(name: str, provider: str = "local"):
    from types import SimpleNamespace
    return SimpleNamespace(identities=[SimpleNamespace(id=name, provider=provider)],
                           type="user")


def test_policy_is_one_more_condition_in_the_index_query(tmp_path: Path) -> None:
    import asyncio

    from tiled.access_control.access_policies import NO_ACCESS

    from databroker_lite.server.adapters import catalog_adapter
    from databroker_lite.server.auth import ProposalAccessPolicy
    local = _make_catalog(tmp_path / "cat")
    import yaml
    policy = ProposalAccessPolicy(**yaml.safe_load(POLICY))
    adapter = catalog_adapter(local)
    scopes = {"read:metadata"}
    for name in ("alice", "bob"):
        filters = asyncio.run(policy.filters(adapter, _principal(name), None, set(), scopes))
        filtered = adapter
        for q in filters:
            filtered = filtered.search(q)
        runs = filtered._mapping
        assert list(runs) == _expected(local, name)
        assert runs.catalog._queries == (
            {"proposal_id": {"$in": {"alice": [P1], "bob": [str(P2), P2]}[name]}},)
    assert asyncio.run(policy.filters(adapter, _principal("carol"), None, set(), scopes)) == []
    nobody = asyncio.run(policy.filters(adapter, _principal("erin"), None, set(), scopes))
    assert len(adapter.search(nobody[0])) == 0  # no proposals: nothing, not everything
    assert asyncio.run(policy.filters(adapter, None, None, set(), scopes)) is NO_ACCESS
    # write scopes are never granted, to staff either: the catalogs are served read-only
    assert asyncio.run(policy.filters(adapter, _principal("carol"), None, set(),
                                      {"write:metadata"})) is NO_ACCESS
    # a run reached by any other path is checked too
    run_adapter = adapter._mapping[_others(local, "alice")[0]]
    assert asyncio.run(policy.allowed_scopes(run_adapter, _principal("alice"), None, set())) \
        == frozenset()
    mine = adapter._mapping[_expected(local, "alice")[0]]
    assert "read:data" in asyncio.run(policy.allowed_scopes(mine, _principal("alice"), None,
                                                            set()))


def test_policy_names_groups_staff_and_providers() -> None:
    from databroker_lite.server.auth import Policy
    p = Policy.from_dict({"key": "proposal.id", "staff": ["carol"], "provider": "pam",
                          "users": {"alice": ["A", 7]},
                          "groups": {"g": {"members": ["bob", "alice"], "proposals": ["B"]},
                                     "s": {"members": ["dave"], "staff": True}}}, "here")
    assert p.access(_principal("alice", "pam")) == (False, frozenset({"A", "7", "B"}))
    assert p.access(_principal("bob", "pam")) == (False, frozenset({"B"}))
    assert p.access(_principal("dave", "pam"))[0] and p.access(_principal("carol", "pam"))[0]
    assert p.access(_principal("carol", "local")) == (False, frozenset())  # other provider
    assert p.access(None) == (False, frozenset())
    assert p.allows_run({"proposal": {"id": 7}}, frozenset({"7"}))
    assert p.allows_run({"proposal": {"id": ["X", "B"]}}, frozenset({"B"}))
    assert not p.allows_run({"proposal": {"id": True}}, frozenset({"True"}))
    # as the catalog's index query matches them: 7.0 is proposal 7, 7.5 no proposal
    assert p.allows_run({"proposal": {"id": 7.0}}, frozenset({"7"}))
    assert not p.allows_run({"proposal": {"id": 7.5}}, frozenset({"7.5"}))
    assert not p.allows_run({"proposal_id": "B"}, frozenset({"B"}))  # the configured key only
    assert p.query_values({"7", "B", "007"}) == ["007", "7", 7, "B"]


def test_throttle_doubles_the_wait_and_forgets_old_names() -> None:
    from databroker_lite.server.users import Throttle
    now = [0.0]
    t = Throttle(free=3, first=1.0, most=5.0, names=2, clock=lambda: now[0])
    for _ in range(2):
        t.failed("a")
    assert t.wait("a") == 0.0
    waits = []
    for _ in range(5):
        t.failed("a")
        waits.append(t.wait("a"))
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    now[0] += 5.0
    assert t.wait("a") == 0.0  # the lockout is over; the count stays until a success
    t.failed("a")
    assert t.wait("a") == 5.0
    t.succeeded("a")
    assert t.wait("a") == 0.0
    for name in ("x", "y", "z"):
        for _ in range(3):
            t.failed(name)
    assert t.wait("x") == 0.0 and t.wait("z") == 1.0  # at most two names are kept


@pytest.mark.parametrize("policy, match", [
    ({"users": ["alice"]}, "'users' maps user names"),
    ({"userz": {}}, r"unknown access policy entries \['userz'\]"),
    ({"users": {"alice": {"x": 1}}}, "users.alice: expected a list"),
    ({"groups": {"g": {"members": ["a"], "staf": True}}}, "groups.g: expected"),
    ({"groups": {"g": {"members": ["a"], "staff": "yes"}}}, "groups.g.staff: true or false"),
    ({"key": "$where"}, "'key' is the start-document key"),
    ([], "the access policy is a mapping"),
])
def test_a_bad_policy_says_what_is_wrong(policy, match: str) -> None:
    from databroker_lite.server.auth import Policy
    with pytest.raises(databroker_lite.errors.ServerConfigError, match=match):
        Policy.from_dict(policy, "policy.yml")


def test_serve_config_defaults_and_refusals(tmp_path: Path, monkeypatch) -> None:
    from databroker_lite.server.auth import load_serve_config, set_password
    ServerConfigError = databroker_lite.errors.ServerConfigError
    cfg = tmp_path / "serve.yml"
    set_password(tmp_path / "users.txt", "alice", "pw")
    cfg.write_text("access: {users: {alice: [A]}}\n")
    config = load_serve_config(cfg)
    assert config.database_uri == f"sqlite:///{tmp_path / 'auth.sqlite'}"
    assert config.users_file == str(tmp_path / "users.txt")
    keys = (tmp_path / "secret_keys").read_text().split()
    assert len(keys) == 1 and len(keys[0]) == 64
    assert config.authentication.secret_keys == keys
    assert config.authentication.allow_anonymous_access is False
    assert keys[0] not in config.describe()
    assert config.describe().endswith(f"access policy from {cfg}")
    (tmp_path / "policy.yml").write_text("users: {alice: [A]}\n")
    cfg2 = tmp_path / "serve2.yml"
    cfg2.write_text("access: {policy_file: policy.yml}\n")
    assert load_serve_config(cfg2).describe().endswith(f"access policy from {tmp_path / 'policy.yml'}")
    if os.name == "posix":
        (tmp_path / "secret_keys").chmod(0o644)
        with pytest.raises(ServerConfigError, match="others can read it: chmod 600"):
            load_serve_config(cfg)
        (tmp_path / "secret_keys").chmod(0o600)
    for text, match in [
        ("{}\n", "needs an 'access' section"),
        ("access: {}\nauthentication: {allow_anonymous_access: true}\n", "anonymous"),
        ("access: {}\nauthentication: {single_user_api_key: abc}\n", "--api-key-file mode"),
        ("access: {}\nextra: 1\n", r"unknown entries \['extra'\]"),
        ("access: {}\nauthentication:\n  providers:\n  - provider: pam\n"
         "    authenticator: tiled.authenticators:PAMAuthenticator\n", "pamela"),
        ("access: {}\nauthentication:\n  providers:\n  - provider: x\n"
         "    authenticator: no.such.module:Auth\n", "authentication"),
        ("access: {policy_file: missing.yml}\n", "cannot read the access policy"),
        ("access: [\n", "cannot read the serve config"),
    ]:
        cfg.write_text(text)
        with pytest.raises(ServerConfigError, match=match):
            load_serve_config(cfg)
    monkeypatch.setenv("DBL_TEST_USERS", str(tmp_path / "users.txt"))
    cfg.write_text("access: {staff: [alice]}\nauthentication:\n  providers:\n"
                   "  - provider: site\n"
                   "    authenticator: databroker_lite.server.auth:PasswordFileAuthenticator\n"
                   "    args: {path: \"${DBL_TEST_USERS}\"}\n")
    assert load_serve_config(cfg).users_file == str(tmp_path / "users.txt")


def test_passwd_command(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from databroker_lite.cli import main
    from databroker_lite.server.auth import PasswordFileAuthenticator
    f = tmp_path / "users.txt"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pässword\n"))
    assert main(["passwd", str(f), "alice", "--password-stdin"]) == 0
    assert "set the password of alice" in capsys.readouterr().out
    assert PasswordFileAuthenticator(str(f))._check("alice", "s3cret pässword").user_name == "alice"
    assert main(["passwd", str(f), "alice", "--remove"]) == 0
    assert main(["passwd", str(f), "alice", "--remove"]) == 1
    assert "has no user 'alice'" in capsys.readouterr().err
