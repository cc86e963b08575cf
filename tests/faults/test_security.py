"""Security faults: pickled messages, tampered models, credentials in logs, hostile keys, telemetry.

Redis over TLS (not tested here): ``BIRTHMARK_REDIS_URL=rediss://host:6380/0?ssl_cert_reqs=required``
with the password in ``BIRTHMARK_REDIS_PASSWORD``; redis-py and kombu read TLS options from the
URL, and ``workers.runtime`` inserts the password without touching scheme or query (tested below).
"""

from __future__ import annotations

import json
import pickle
import uuid
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.faults._support import sample_jpeg, upload_samples, wait_for, wait_job
from tests.faults.conftest import Workers, base_env, bound
from tests.workers.helpers import publish_tiny_champion

pytestmark = pytest.mark.integration

AWS_SECRET = "FAKEsecret-9f3b-DO-NOT-LOG-aws"
REDIS_SECRET = "FAKEsecret-71c2-DO-NOT-LOG-redis"


class _CreatesMarker:
    """If this is ever unpickled, ``open(path, "w")`` runs and the marker file appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_message_is_refused_not_executed(scoring_service, tmp_path):
    from kombu import Connection

    from workers.runtime import store
    from workers.submit import submit_scoring

    marker = tmp_path / "pwned"
    body = ((_CreatesMarker(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None})
    assert pickle.loads(pickle.dumps(body)) and marker.exists()  # the payload works...
    marker.unlink()  # ...when unpickled; now make sure the worker never does

    with Connection(scoring_service.redis.url) as conn:
        conn.Producer().publish(
            body,
            serializer="pickle",  # content_type application/x-python-serialize
            exchange="",
            routing_key="score",
            headers={"task": "score.plan", "id": str(uuid.uuid4()), "lang": "py"},
        )
    worker = scoring_service.worker
    wait_for(lambda: "Refusing to deserialize" in worker.output(), timeout=30, what="refusal")
    assert "ContentDisallowed" in worker.output() or "untrusted content" in worker.output()
    assert not marker.exists()
    assert worker.proc.poll() is None

    # Still serving: a normal job after the hostile message completes.
    with bound(scoring_service.env):
        store().put("uploads/after-pickle.jpg", sample_jpeg(1, size=(160, 120)))
        job_id, _ = submit_scoring(items=[{"key": "uploads/after-pickle.jpg"}])
        assert wait_job(job_id, timeout=60)["status"] == "done"
    assert not marker.exists()


@pytest.fixture(scope="module")
def secured(tmp_path_factory, s3_server):
    """Password-protected Redis (the worker gets the password from BIRTHMARK_REDIS_PASSWORD, this
    process from the URL), a recognisable fake AWS secret, one worker."""
    root = tmp_path_factory.mktemp("secured")
    server = RedisServer(root / "redis", password=REDIS_SECRET)
    server.start()
    common = {
        "BIRTHMARK_STORE": f"s3://secured-{uuid.uuid4().hex[:8]}",
        "BIRTHMARK_S3_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    worker_env = base_env(
        root,
        f"redis://127.0.0.1:{server.port}/0",
        BIRTHMARK_REDIS_PASSWORD=REDIS_SECRET,
        **common,
    )
    test_env = base_env(root, server.url, **common)
    pool = Workers(root)
    try:
        worker = pool.start(worker_env)
        yield test_env, worker, server
    finally:
        pool.close()
        server.stop()


def test_tampered_model_is_refused_and_rows_say_so(secured):
    import models
    from workers import registry, results
    from workers.runtime import store
    from workers.submit import submit_scoring

    env, worker, _ = secured
    with bound(env):
        st = store()
        model_id = publish_tiny_champion(st, seed=3)
        weights = registry.read_weights(st, model_id)
        tampered = bytearray(weights)
        tampered[-1] ^= 0xFF  # one flipped bit in the last tensor: the card's sha256 no longer fits
        with pytest.raises(models.ChecksumError):
            models.load_checkpoint(bytes(tampered), registry.read_card(st, model_id))

        st.put(f"models/{model_id}/model.safetensors", bytes(tampered))
        keys = upload_samples(st, "tampered", 3, size=(160, 120))
        job_id, _ = submit_scoring(items=[{"key": k} for k in keys])
        job = wait_job(job_id, timeout=60)
        assert job["status"] == "done", job
        rows = list(results.read_rows(st, job_id))
        assert [r["error_kind"] for r in rows] == ["model_unavailable"] * 3
        assert "sha256" in rows[0]["message"]
        assert worker.proc.poll() is None and "cannot be loaded" in worker.output()

        # Restoring the weights restores scoring, without restarting the worker.
        st.put(f"models/{model_id}/model.safetensors", weights)
        job_id, _ = submit_scoring(items=[{"key": k} for k in keys])
        assert wait_job(job_id, timeout=60)["status"] == "done"
        assert {r["status"] for r in results.read_rows(st, job_id)} == {"ok"}


def test_credentials_never_logged_or_stored(secured):
    from workers import jobs, results
    from workers.runtime import redis_client, store
    from workers.submit import submit_scoring

    env, worker, server = secured
    with bound(env):
        st, r = store(), redis_client()
        publish_tiny_champion(st, seed=4)
        st.put("uploads/creds/ok.jpg", sample_jpeg(2, size=(160, 120)))
        st.put("uploads/creds/bad.jpg", b"not an image")
        job_id, _ = submit_scoring(prefixes=[{"prefix": "uploads/creds/"}])
        job = wait_job(job_id, timeout=60)
        assert job["status"] == "done"  # the worker authenticated with BIRTHMARK_REDIS_PASSWORD
        assert len(list(results.read_rows(st, job_id))) == 2

        haystacks = {"worker log": worker.output()}
        for key in r.scan_iter("*"):
            kind = r.type(key)
            if kind == "string":
                value = r.get(key)
            elif kind == "hash":
                value = r.hgetall(key)
            elif kind == "list":
                value = r.lrange(key, 0, -1)
            elif kind == "set":
                value = r.smembers(key)
            elif kind == "zset":
                value = r.zrange(key, 0, -1)
            else:
                value = kind
            haystacks[f"redis {key}"] = f"{key} {value}"
        for obj in st.list(""):
            if not obj.key.endswith(".safetensors"):
                haystacks[f"store {obj.key}"] = st.get(obj.key).decode("utf-8", "replace")
        assert any(k.startswith("store results/") for k in haystacks)
        assert jobs.get_job(r, job_id)["result"]  # the summary is in the job record too
        for where, text in haystacks.items():
            assert AWS_SECRET not in text, where
            assert REDIS_SECRET not in text, where
        assert "redis://:**@" in worker.output()  # the broker URL is shown redacted


def test_redis_password_from_url_and_from_setting(secured):
    from workers.runtime import redact_url, redis_client, redis_url

    env, _, server = secured
    with bound(env):  # the password inside the URL
        assert redis_client().ping()
        assert REDIS_SECRET not in redact_url(redis_url())
    plain = {**env, "BIRTHMARK_REDIS_URL": f"redis://127.0.0.1:{server.port}/0"}
    with bound({**plain, "BIRTHMARK_REDIS_PASSWORD": REDIS_SECRET}):  # BIRTHMARK_REDIS_PASSWORD
        assert redis_client().ping()
    tls = "rediss://cache.example:6380/0?ssl_cert_reqs=required"
    with bound({**plain, "BIRTHMARK_REDIS_URL": tls, "BIRTHMARK_REDIS_PASSWORD": "pw"}):
        assert redis_url() == "rediss://:pw@cache.example:6380/0?ssl_cert_reqs=required"
        assert redact_url(redis_url()) == "rediss://***@cache.example:6380/0?ssl_cert_reqs=required"
    # An ACL user in the URL is kept, and URL-special characters in the password stay inside it.
    acl = "redis://worker@cache.example:6379/0"
    with bound({**plain, "BIRTHMARK_REDIS_URL": acl, "BIRTHMARK_REDIS_PASSWORD": "p@ss/w:rd"}):
        assert redis_url() == "redis://worker:p%40ss%2Fw%3Ard@cache.example:6379/0"
        kwargs = redis_client().connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["host"]) == (
            "worker", "p@ss/w:rd", "cache.example",
        )  # fmt: skip


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "uploads/../../etc/passwd",
        "uploads/./x.jpg",
        "/etc/passwd",
        "C:/Windows/x.jpg",
        "uploads\\..\\x.jpg",
        "uploads//x.jpg",
        "uploads/x\x00.jpg",
        "uploads/x\n.jpg",
        "uploads/\x7f.jpg",
        "",
        "u/" + "x" * 1100,
    ],
)
def test_validate_key_refuses_hostile_keys(key):
    from workers.store import InvalidKey, validate_key

    with pytest.raises(InvalidKey):
        validate_key(key)


def test_validate_key_accepts_odd_but_fine_keys():
    from workers.store import validate_key

    for key in ("uploads/zdjęcie 😀.jpg", "uploads/my photo (1).jpg", "a/b.c/..d/e..jpg", "x"):
        assert validate_key(key) == key


def test_local_store_never_escapes_its_root(tmp_path):
    from workers.store import InvalidKey, LocalStore

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    st = LocalStore(tmp_path / "root")
    (st.root / "uploads").mkdir()
    (st.root / "uploads" / "link").symlink_to(outside, target_is_directory=True)
    for key in ("uploads/link/secret.txt", "../outside/secret.txt"):
        with pytest.raises(InvalidKey):
            st.get(key)
        with pytest.raises(InvalidKey):
            st.put(key, b"x")
    assert (outside / "secret.txt").read_text() == "secret"


def test_isic_cli_sends_no_telemetry_and_only_talks_to_loopback(tmp_path, monkeypatch):
    """The launcher disables isic-cli's Sentry; every connection of the real isic-cli process is
    recorded by an audit hook (sitecustomize) and must go to the loopback ISIC server."""
    import curation
    from curation.isic import build_command
    from tests.isic_server import IsicTestServer, make_records

    for api_url in (None, "http://127.0.0.1:1"):
        launcher = build_command(tmp_path, api_url=api_url)[2]
        assert "cli._sentry_setup = lambda: None" in launcher

    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    record = tmp_path / "network.json"
    (hook_dir / "sitecustomize.py").write_text(
        "import atexit, json, sys\n"
        "seen = []\n"
        "def hook(event, args):\n"
        "    if event == 'socket.connect':\n"
        "        seen.append(repr(args[1]))\n"
        "    elif event == 'socket.getaddrinfo':\n"
        "        seen.append('dns:' + str(args[0]))\n"
        "sys.addaudithook(hook)\n"
        "def dump():\n"
        "    sentry = sys.modules.get('sentry_sdk')\n"
        "    on = bool(sentry and sentry.is_initialized())\n"
        f"    open({str(record)!r}, 'w').write(json.dumps({{'seen': seen, 'sentry': on}}))\n"
        "atexit.register(dump)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(hook_dir))
    with IsicTestServer(make_records(2, seed=3), page_size=2) as server:
        result = curation.download_images(
            tmp_path / "pull", limit=2, api_url=server.url, timeout=60
        )
    assert len(result.images) == 2
    seen = json.loads(record.read_text())
    assert seen["sentry"] is False
    assert seen["seen"], "the audit hook saw no connection at all"
    loopback = ("127.0.0.1", "localhost", "::1", "'127.0.0.1'", "('127.0.0.1'")
    assert all(any(h in s for h in loopback) for s in seen["seen"]), seen["seen"]
