"""User logins and per-proposal access (issue 19): a real ``serve --config`` in a subprocess.

Two proposals, three users: alice reads proposal 2024-001, bob (through a group) reads
proposal 301234 (an int in the start documents), carol is staff and reads everything,
including a run with no proposal at all.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite

HAVE_SERVER = all(importlib.util.find_spec(m) is not None
                  for m in ("tiled", "fastapi", "uvicorn", "argon2"))
pytestmark = pytest.mark.skipif(not HAVE_SERVER, reason="needs the server extra")

PASSWORDS = {"alice": "alice-pw-1", "bob": "bøb-pässwörd", "carol": "carol-staff-pw"}
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(tmp: Path, *catalogs: str):
    """``databroker-lite serve CATALOGS --config tmp/serve.yml``; yields its URL."""
    import httpx
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "server.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "databroker_lite", "serve", *catalogs,
                                 "--port", str(port), "--config", str(tmp / "serve.yml")],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(480):  # tiled's import and database set-up, on a busy machine
                if proc.poll() is not None:
                    break
                try:
                    httpx.get(f"{url}/api/v1/", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.25)
            else:
                pytest.fail("the server did not answer within two minutes")
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the server exited: {log.read()}")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


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


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_each_user_sees_exactly_their_runs(site, name: str) -> None:
    url, local, _ = site
    cat = _login(url, name)
    expected = _expected(local, name)
    assert len(expected) == {"alice": 2, "bob": 2, "carol": 5}[name]
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
