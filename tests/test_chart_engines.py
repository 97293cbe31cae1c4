"""The chart's engine-side security, run for real where it can be.

Redis: the rendered redis.conf and ACL script start a real redis-server, and the application's own
Redis code (counters, idempotency records) runs as each ACL user: every command it needs is
allowed, and what it does not need is refused. MongoDB does not run here: its init script runs in
Node against a stand-in for mongosh's `db` that records the users and roles it makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.exceptions import NoPermissionError, RedisError

from tests.conftest import free_port
from tests.dashboard_queries import RedisQuery, all_queries
from tests.test_deploy import _need, render
from weathertweets.backends.redis_counters import RedisCounters
from weathertweets.backends.redis_idempotency import RedisIdempotency
from weathertweets.ports import BackendUnavailable, CountedTweet

USERS = ("admin", "gateway", "counter", "grafana")
PRODUCTION = ["-f", "deploy/helm/weathertweets/ci/production-values.yaml"]


def _need_redis() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("WT_REQUIRE_ENGINES") == "1":
        pytest.fail("redis-server is missing: `make services` installs it")
    pytest.skip("redis-server is not installed (`make services`)")


def config_map(name: str, *values: str) -> dict[str, str]:
    docs = render(*values)
    found = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
    return dict(found["data"])


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{log.read_text(errors='replace')}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not listen:\n{log.read_text(errors='replace')}")


Url = Callable[[str], str]


@contextmanager
def chart_redis_server(folder: Path, *values: str) -> Iterator[Url]:
    """redis-server with the chart's configuration and ACL file (only the port, the address, the
    folders and the ACL file's path changed); yields `url(user)`."""
    server = _need_redis()
    config = config_map("wt-weathertweets-redis", *values)
    folder.mkdir(parents=True)
    lines = config["redis.conf"].splitlines()
    assert "dir /data" in lines and "aclfile /run/redis/users.acl" in lines
    mine = {
        "dir /data": f"dir {folder}",
        "aclfile /run/redis/users.acl": f"aclfile {folder}/users.acl",
    }
    (folder / "redis.conf").write_text("\n".join(mine.get(line, line) for line in lines))
    (folder / "users.sh").write_text(config["users.sh"])
    passwords = {user: secrets.token_hex(20) for user in USERS}
    env = {f"REDIS_{user.upper()}_PASSWORD": password for user, password in passwords.items()}
    acl = folder / "users.acl"
    subprocess.run(
        ["sh", str(folder / "users.sh"), str(acl)], env={"PATH": os.environ["PATH"], **env},
        check=True,
    )  # fmt: skip
    written = acl.read_text()
    assert not any(password in written for password in passwords.values())  # hashes only
    assert acl.stat().st_mode & 0o077 == 0
    port, log = free_port(), folder / "redis.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [server, str(folder / "redis.conf"), "--port", str(port), "--bind", "127.0.0.1",
             "--daemonize", "no"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_port(port, process, log)
        # the admin is Redis's `default` user
        names = {"admin": "default"}
        yield lambda user: f"redis://{names.get(user, user)}:{passwords[user]}@127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(params=[True, False], ids=["seed-keys", "prefix-only"])
def chart_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Url, bool]]:
    seed: bool = request.param
    values = ["--set", f"pipeline.seedKeys={str(seed).lower()}"]
    with chart_redis_server(tmp_path / "redis", *values) as url:
        yield url, seed


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _config(admin: redis.Redis, pattern: str) -> dict[str, str]:
    return cast(dict[str, str], admin.config_get(pattern))  # the sync stubs allow an Awaitable


def refused(call: Callable[..., object], *args: object) -> bool:
    try:
        call(*args)
    except NoPermissionError:
        return True
    return False


def test_the_application_runs_as_its_redis_users(chart_redis: tuple[Url, bool]) -> None:
    url, seed = chart_redis

    async def scenario() -> dict[str, Any]:
        counter = RedisCounters(url("counter"), "wt:", seed_keys=seed)
        gateway = RedisCounters(url("gateway"), "wt:", seed_keys=seed)
        keys = {user: RedisIdempotency(url(user), "wt:") for user in ("gateway", "counter")}
        try:
            await counter.start()
            await gateway.start()
            batch = [
                CountedTweet(0, 0, "México", "Lluvia fuerte", "rain", "id-1"),
                CountedTweet(0, 1, "Guatemala", "Sol", "clear"),
            ]
            applied = await counter.apply("counter", batch)
            replayed = await counter.apply("counter", batch)
            capped = RedisCounters(url("counter"), "wt:", seed_keys=seed, text_cap=2)
            try:  # past its cap, the script prunes the least counted texts in the same call
                texts = ["Niebla", "Niebla", "Granizo", "Granizo", "Brisa", "Rocío"]
                tweets = [CountedTweet(1, i, "Perú", text, "other") for i, text in enumerate(texts)]
                await capped.apply("counter", tweets)
            finally:
                await capped.close()
            await gateway.increment("México", "Lluvia fuerte", "rain", id="id-2")  # POST /set
            await counter.increment("Guatemala", "Sol", "clear")  # the counter's own /set
            for user, store in keys.items():
                await store.start()
                first = await store.claim(user, "key-1", "fp", 1)
                await store.complete(user, "key-1", 202, b"{}")
                again = await store.claim(user, "key-1", "fp", 2)
                assert (first.status, again.status, again.received_at_us) == (None, 202, 1)
            return {
                "applied": (applied, replayed),
                "stats": await gateway.stats(),
                "country": await gateway.country("México"),
                "capped": await gateway.country("Perú"),
                "conditions": await gateway.country_conditions(),
            }
        finally:
            await counter.close()
            await gateway.close()
            for store in keys.values():
                await store.close()

    seen = asyncio.run(scenario())
    assert seen["applied"] == (2, 0)
    assert seen["stats"].total == 10
    assert seen["stats"].countries == {"Guatemala": 2, "México": 2, "Perú": 6}
    assert seen["capped"] == {"Granizo": 2, "Niebla": 2}
    assert seen["country"] == {"Lluvia fuerte": 2}
    assert seen["conditions"]["México"] == {"rain": 2}
    admin = client(url("admin"))
    assert admin.hgetall("México") == ({"Lluvia fuerte": "2"} if seed else {})


def test_the_redis_users_can_do_nothing_else(chart_redis: tuple[Url, bool]) -> None:
    url, seed = chart_redis
    admin, gateway, counter, grafana = (client(url(user)) for user in USERS)
    admin.set("wt:total", "7")
    admin.hset("Narnia", "texto", "1")
    for app in (gateway, counter):
        assert refused(app.flushall)
        assert refused(app.config_get, "*")
        assert refused(app.keys, "*")
        assert refused(app.delete, "wt:total")
        assert refused(app.acl_list)
        assert refused(app.eval, "return 1", 0)  # only the scripts it loaded, by their sha
        assert refused(app.set, "elsewhere", "1")
        assert refused(app.hset, "Narnia", "texto", "2")  # a bare key: never HSET
        assert refused(app.hgetall, "Narnia")
        # the original's hashes: HINCRBY on a bare key, with pipeline.seedKeys only
        assert refused(app.hincrby, "Narnia", "texto", 1) is not seed
    assert refused(counter.get, "wt:total")  # the counter reads nothing
    assert gateway.get("wt:total") == "7"
    assert refused(grafana.hset, "wt:countries", "x", 1)
    assert refused(grafana.keys, "*")
    assert grafana.hgetall("Narnia") == {"texto": "3" if seed else "1"}
    port = admin.connection_pool.connection_kwargs["port"]
    no_session = r"NOAUTH|authenticated|Authentication required"  # the wording varies by client
    with pytest.raises(RedisError, match=no_session):  # no password, no session
        redis.Redis(port=port).ping()


def test_every_dashboard_query_runs_as_the_grafana_user(tmp_path: Path) -> None:
    with chart_redis_server(tmp_path / "redis") as url:
        grafana = client(url("grafana"))
        variables = {"${prefix}": "wt:", "$pais": "México"}
        for query in all_queries():
            if isinstance(query, RedisQuery):
                args = list(query.args)
                for name, value in variables.items():
                    args = [arg.replace(name, value) for arg in args]
                run: Callable[..., object] = grafana.execute_command
                run(*args)  # NoPermissionError fails the test


@pytest.mark.parametrize("values", [[], PRODUCTION], ids=["default", "production"])
def test_redis_is_durable_and_full_means_refused_never_evicted(
    values: list[str], tmp_path: Path
) -> None:
    with chart_redis_server(tmp_path / "redis", *values) as url:
        admin = client(url("admin"))
        config = {**_config(admin, "append*"), **_config(admin, "maxmemory*")}
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        assert config["maxmemory-policy"] == "noeviction"
        limit = "402653184" if values else "167772160"  # 384Mi, 160Mi
        assert config["maxmemory"] == limit
        assert _config(admin, "save")["save"] == ""

        counter = RedisCounters(url("counter"), "wt:")

        async def count_when_full() -> None:
            await counter.apply("counter", [CountedTweet(0, 0, "Chile", "Nieve", "snow")])
            admin.config_set("maxmemory", "1")
            try:
                with pytest.raises(BackendUnavailable, match="maxmemory"):
                    await counter.apply("counter", [CountedTweet(0, 1, "Chile", "Nieve", "snow")])
            finally:
                admin.config_set("maxmemory", limit)
                await counter.close()

        asyncio.run(count_when_full())
        assert admin.get("wt:total") == "1"  # refused, and nothing evicted


# --- MongoDB -------------------------------------------------------------------------------------

RECORDER = """
const vm = require("node:vm");
const calls = [];
const db = { getSiblingDB: (database) => ({
  createUser: (user) => calls.push({ call: "createUser", database, ...user }),
  createRole: (role) => calls.push({ call: "createRole", database, ...role }),
}) };
const env = JSON.parse(process.argv[1]);
vm.runInNewContext(require("node:fs").readFileSync(0, "utf8"), { db, process: { env } });
console.log(JSON.stringify(calls));
"""


def test_the_mongodb_users_have_rights_on_their_database_alone() -> None:
    node = _need("node", "node")
    docs = render()
    script = config_map("wt-weathertweets-mongodb-init")["users.js"]
    mongodb = next(
        d for d in docs if d["kind"] == "StatefulSet" and "mongodb" in d["metadata"]["name"]
    )
    container = mongodb["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", f"<{e['name']}>") for e in container["env"]}
    done = subprocess.run(
        [node, "-e", RECORDER, json.dumps(env)], input=script, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout)
    assert {c["database"] for c in calls} == {"weathertweets"}
    users = {c["user"]: c for c in calls if c["call"] == "createUser"}
    assert set(users) == {"archiver", "gateway"}
    assert users["archiver"]["pwd"] == "<ARCHIVER_PASSWORD>"
    assert users["gateway"]["pwd"] == "<GATEWAY_PASSWORD>"
    assert users["archiver"]["roles"] == [{"role": "readWrite", "db": "weathertweets"}]
    assert users["gateway"]["roles"] == [{"role": "archiveReader", "db": "weathertweets"}]
    (role,) = [c for c in calls if c["call"] == "createRole"]
    assert role["role"] == "archiveReader" and role["roles"] == []
    (privilege,) = role["privileges"]
    assert privilege["resource"] == {"db": "weathertweets", "collection": ""}
    # the gateway reads and makes its indexes (MongoStore.start); it changes no document
    assert set(privilege["actions"]) == {
        "find",
        "listIndexes",
        "createIndex",
        "createCollection",
        "collStats",
    }
    assert "/docker-entrypoint-initdb.d" in {m["mountPath"] for m in container["volumeMounts"]}
    assert env["MONGO_INITDB_ROOT_USERNAME"] == "root"
