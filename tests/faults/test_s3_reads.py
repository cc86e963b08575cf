"""How :meth:`workers.store.S3Store.get` reads a body: whole, bounded, and never silently short.

Against moto for what S3 sends (a declared ``Content-Length``), and against a small HTTP server on
loopback that answers like a misbehaving S3 endpoint: a chunked body with no declared length, and
a body cut off before its declared length.
"""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from workers.store import ObjectTooLarge, S3Store, StoreUnavailable


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
    """``GET /b/chunked``: 3 chunks of 1000 bytes, no length. ``GET /b/cut``: 100 of 5000 bytes."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []  # each GET's headers, lower-cased

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(3):
                self.wfile.write(b"3e8\r\n" + b"c" * 1000 + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
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
