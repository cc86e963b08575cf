"""The benchmark runs end to end on a handful of images and reports every row (no timing checks)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def test_benchmark_quick_run_reports_every_row(tmp_path, monkeypatch):
    from benchmarks import __main__ as bench

    out = tmp_path / "results.md"
    monkeypatch.setattr(bench, "jpeg_set", _tiny_jpeg_set)
    bench.main(["--quick", "--small", "3", "--large", "1", "--out", str(out)])
    text = out.read_text()
    names = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert names[0] == "measure"
    assert names[1:] == list(bench.ROWS)
    assert "img/s" in text and "GFLOP/s" in text
    e2e_row = next(line for line in text.splitlines() if line.startswith("| e2e 1024x768"))
    assert re.search(r"\| \d+\.\d{2,6} \(\d+\.\d\d-\d+\.\d\d\) +\|", e2e_row), e2e_row


def _tiny_jpeg_set(width: int, height: int, n: int, **kwargs) -> list[bytes]:
    from benchmarks._images import jpeg_set

    # Same shape of work, a fraction of the pixels: keeps the smoke run well under a minute.
    return jpeg_set(width // 4, height // 4, n, **kwargs)


def test_the_stack_can_use_an_s3_server_it_did_not_start():
    from benchmarks import e2e
    from benchmarks._stack import S3Server

    elsewhere = S3Server().start()  # stands in for MinIO on another machine
    try:
        blobs = _tiny_jpeg_set(1024, 768, 3)
        with e2e.scoring_stack(s3_endpoint=elsewhere.url) as stack:
            assert stack.env["BIRTHMARK_S3_ENDPOINT_URL"] == elsewhere.url
            before = elsewhere.requests()["GET"]
            counts = e2e.request_counts(stack, blobs)
            served = elsewhere.requests()["GET"] - before
        assert counts["s3"] is None and counts["s3_per_image"] is None  # not ours to count
        assert counts["redis_per_image"] > 0
        assert served >= len(blobs)  # the worker read the uploads from that server
    finally:
        elsewhere.stop()


@pytest.mark.parametrize(("http", "keeps_alive"), [("gunicorn", True), ("werkzeug", False)])
def test_the_benchmarks_s3_server_keeps_connections_alive_unless_asked_for_werkzeug(
    http, keeps_alive
):
    import boto3
    import urllib3.connection

    from benchmarks._stack import S3Server

    server = S3Server(process=True, http=http).start()
    connects = []
    real_connect = urllib3.connection.HTTPConnection.connect

    def counting_connect(self):
        connects.append(self)
        return real_connect(self)

    try:
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="k", Body=b"x" * 300_000)
        urllib3.connection.HTTPConnection.connect = counting_connect
        bodies = [s3.get_object(Bucket="bench", Key="k")["Body"].read() for _ in range(3)]
        assert bodies == [b"x" * 300_000] * 3
        assert len(connects) == (0 if keeps_alive else 3)
        assert server.requests()["GET"] == 3  # the counting middleware is in front either way
    finally:
        urllib3.connection.HTTPConnection.connect = real_connect
        server.stop()
