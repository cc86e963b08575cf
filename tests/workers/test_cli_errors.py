"""How the `birthmark` command line fails: exit codes and messages, on a real redis-server and a
local store (no worker)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.workers.test_review_cli import _publish_borderline

# Every command that looks an id up. An id that names nothing is bad usage (exit 2), as a path
# that does not exist is to click: exit 1 means "failed" (for `jobs status` and `--wait`: the
# job failed), so a script can tell a failed job from a mistyped or expired id. `{v}` is a
# published curated version.
UNKNOWN_IDS = [
    ("jobs", "status", "nope-job"),
    ("jobs", "status", "nope-job", "--json"),
    ("jobs", "status", "nope-job", "--wait"),
    ("jobs", "results", "nope-job"),
    ("jobs", "resume", "nope-job"),
    ("models", "show", "nope-model"),
    ("models", "promote", "nope-model"),
    ("curate", "diff", "nope00000000", "{v}"),
    ("curate", "diff", "{v}", "nope00000000"),
    ("review", "accept", "ISIC_NOPE"),
    ("review", "reject", "ISIC_NOPE"),
    ("train", "--data", "nope00000000"),
    ("curate", "run", "--pull", "nope-pull", "--no-wait"),
]


@pytest.mark.parametrize("args", UNKNOWN_IDS, ids=" ".join)
def test_an_unknown_id_is_bad_usage_in_every_command(env, args):
    from workers.app import QUEUES
    from workers.cli import app
    from workers.runtime import redis_client, store

    st = store()
    _publish_borderline(st)  # review's ids and `{v}`
    version = st.read_pointer("curated/LATEST")
    argv = [a.replace("{v}", version) for a in args]
    unknown = next(a for a in argv if "nope" in a.lower())
    r = redis_client()
    queued_before = {q: r.llen(q) for q in QUEUES}  # the session's redis: other tests' leftovers
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    # A click usage error (SystemExit 2), not an exception that main() would turn into exit 1.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert unknown in result.output and "Invalid value" in result.output
    assert st.read_pointer("models/CHAMPION") is None  # promote changed nothing
    assert {q: r.llen(q) for q in QUEUES} == queued_before  # train, curate run queued nothing


def test_a_service_error_that_ends_a_sentence_is_not_given_a_second_full_stop():
    """redis-py's text ends with its own full stop; the message used to read "refused.. Is"."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from tests.conftest import free_port
    from workers.cli import _unavailable

    with pytest.raises(redis.ConnectionError) as refused:
        redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0)).ping()
    err = refused.value
    assert str(err).endswith("Connection refused.")
    assert _unavailable(err) == f"{err} Is `birthmark services up` running?"


def test_an_unreachable_store_is_one_sentence_and_exit_1(s3_env, monkeypatch, capsys):
    """Through main(), as a user meets it: an S3 endpoint where nothing listens."""
    from tests.conftest import free_port, reset_caches
    from workers.cli import main

    monkeypatch.setenv("BIRTHMARK_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["birthmark", "models", "list"])
    reset_caches()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    line = " ".join(capsys.readouterr().err.split())
    assert line == (
        "service unavailable: S3 unreachable: EndpointConnectionError. "
        "Is `birthmark services up` running?"
    )
