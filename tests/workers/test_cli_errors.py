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
]


@pytest.mark.parametrize("args", UNKNOWN_IDS, ids=" ".join)
def test_an_unknown_id_is_bad_usage_in_every_command(env, args):
    from workers.cli import app
    from workers.runtime import store

    st = store()
    _publish_borderline(st)  # review's ids and `{v}`
    version = st.read_pointer("curated/LATEST")
    argv = [a.replace("{v}", version) for a in args]
    unknown = next(a for a in argv if "nope" in a.lower())
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    # A click usage error (SystemExit 2), not an exception that main() would turn into exit 1.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert unknown in result.output and "Invalid value" in result.output
    assert st.read_pointer("models/CHAMPION") is None  # promote changed nothing
