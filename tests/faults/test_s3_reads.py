"""How :meth:`workers.store.S3Store.get` reads a body: whole, bounded, and never silently short.

Against moto for what S3 sends (a declared ``Content-Length``), and against a small HTTP server on
loopback that answers like a misbehaving S3 endpoint: a chunked body with no declared length, a
body cut off before its declared length, throttling, server errors and refusals.
"""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import free_port
from workers.store import ObjectMissing, ObjectTooLarge, S3Store, StoreUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_server, aws_credentials) -> S3Store:
    store = S3Store(f"reads-{uuid.uuid4().hex[:8]}", endpoint_url=s3_server)
    store.ensure_bucket()
    return store


def test_get_returns_the_whole_object_at_and_under_the_limit(bucket):
    data = os.urandom(3_000_001)  # several socket reads and more than the old 1 MiB chunk
    bucket.put("photo.jpg", data)
    assert bucket.get("photo.jpg") == data
    assert bucket.get("photo.jpg", max_bytes=len(data)) == data


def test_get_refuses_a_declared_length_over_the_limit(bucket):
    bucket.put("big.jpg", b"x" * 5000)
    with pytest.raises(ObjectTooLarge, match="5000 bytes exceeds the limit of 4999"):
        bucket.get("big.jpg", max_bytes=4999)


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Answers by key as S3 should not: ``chunked`` 3 chunks of 1000 bytes and no length; ``cut``
    100 of 5000 bytes; ``whole`` 5000 bytes on a kept-alive connection; ``flaky`` 503 SlowDown
    ``flaky_left`` times, then whole; ``down`` 500; ``denied`` 403 AccessDenied; ``gone`` 404."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []  # each GET's headers, lower-cased
    connections = 0
    flaky_left = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        key = urlsplit(self.path).path.rsplit("/", 1)[-1]  # a presigned URL has a query
        if key == "flaky" and type(self).flaky_left > 0:
            type(self).flaky_left -= 1
            key = "slow"
        errors = {"slow": (503, "SlowDown"), "down": (500, "InternalError"),
                  "denied": (403, "AccessDenied"), "gone": (404, "NoSuchKey")}  # fmt: skip
        if key in errors:
            status, code = errors[key]
            body = f"<Error><Code>{code}</Code><Message>{code} here</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif key == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(3):
                self.wfile.write(b"3e8\r\n" + b"c" * 1000 + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif key in ("whole", "flaky"):
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"w" * 5000)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"t" * 100)
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def misbehaving(aws_credentials) -> Iterator[S3Store]:
    _Misbehaving.connections = _Misbehaving.flaky_left = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    store = S3Store("b", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    yield store
    server.shutdown()
    thread.join()


def test_a_body_without_declared_length_is_read_up_to_the_limit(misbehaving):
    assert misbehaving.get("chunked") == b"c" * 3000
    with pytest.raises(ObjectTooLarge, match="more than 1500 bytes"):
        misbehaving.get("chunked", max_bytes=1500)


def test_a_body_cut_short_is_a_transient_failure_not_a_short_image(misbehaving):
    with pytest.raises(StoreUnavailable, match="read of cut failed"):
        misbehaving.get("cut")


def test_downloads_do_not_ask_for_a_checksum(bucket, misbehaving):
    # botocore >= 1.36 asks for (x-amz-checksum-mode) and CRC32s every body it can by default:
    # 0.9 ms per 2.9 MB photo. The store asks for none; the object still reads back whole.
    data = os.urandom(300_000)
    bucket.put("photo.jpg", data)
    assert bucket.get("photo.jpg") == data
    _Misbehaving.seen.clear()
    misbehaving.get("chunked")
    assert _Misbehaving.seen and "x-amz-checksum-mode" not in _Misbehaving.seen[-1]


def test_downloads_reuse_one_connection_and_drop_one_left_unread(misbehaving):
    assert [misbehaving.get("whole") for _ in range(3)] == [b"w" * 5000] * 3
    assert _Misbehaving.connections == 1
    # Refused on its declared length, a body is left unread: that connection must not be reused
    # (its bytes would be read as the next answer).
    with pytest.raises(ObjectTooLarge):
        misbehaving.get("whole", max_bytes=10)
    assert misbehaving.get("whole") == b"w" * 5000
    assert _Misbehaving.connections == 2


def test_throttling_is_retried_and_a_lasting_failure_is_transient(misbehaving, monkeypatch):
    monkeypatch.setattr("workers.store._BACKOFF_S", 0.001)
    _Misbehaving.flaky_left = 2
    _Misbehaving.seen.clear()
    assert misbehaving.get("flaky") == b"w" * 5000
    assert len(_Misbehaving.seen) == 3  # two SlowDown answers, then the object
    _Misbehaving.seen.clear()
    with pytest.raises(StoreUnavailable, match="InternalError"):
        misbehaving.get("down")
    assert len(_Misbehaving.seen) == 4  # as many attempts as the client's retry mode makes


def test_error_answers_keep_their_s3_meaning(misbehaving):
    from botocore.exceptions import ClientError

    with pytest.raises(ObjectMissing):
        misbehaving.get("gone")
    _Misbehaving.seen.clear()
    with pytest.raises(ClientError, match="AccessDenied") as denied:
        misbehaving.get("denied")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(_Misbehaving.seen) == 1  # not retried
    assert misbehaving.get("whole") == b"w" * 5000  # the error bodies were read off the wire
    assert _Misbehaving.connections == 1


def test_listing_leaves_out_folder_markers(bucket):
    """The S3 console's "Create folder" writes a zero-byte ``uploads/clinic-7/``; listed, it became
    an input of every job over that prefix (and of the watcher) and an `empty` error row."""
    bucket.client.put_object(Bucket=bucket.bucket, Key=bucket.prefix + "uploads/c7/", Body=b"")
    bucket.put("uploads/c7/a.jpg", b"photo")
    assert [o.key for o in bucket.list("uploads/")] == ["uploads/c7/a.jpg"]
