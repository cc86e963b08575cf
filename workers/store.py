"""Object store: one interface over a local folder or an S3 bucket (boto3).

Keys are ``/``-separated and validated before any use (no traversal, no absolute paths, bounded
length). Transient S3 failures surface as :class:`StoreUnavailable`, which Celery tasks retry.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import boto3
import urllib3
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

__all__ = [
    "ObjectInfo",
    "Store",
    "LocalStore",
    "S3Store",
    "ObjectMissing",
    "ObjectTooLarge",
    "StoreUnavailable",
    "InvalidKey",
    "UnknownId",
    "validate_key",
    "open_store",
]

MAX_KEY_BYTES = 1024
_CHUNK = 1024 * 1024


class ObjectMissing(KeyError):
    """The key does not exist (any more)."""


class ObjectTooLarge(ValueError):
    """The object is larger than the caller allows; nothing was downloaded past the limit."""


class StoreUnavailable(OSError):
    """A transient store failure (connection refused, timeout, 5xx); safe to retry."""


class InvalidKey(ValueError):
    """A key that must not be used: traversal, absolute path, control characters, too long."""


class UnknownId(ValueError):
    """An id (model, curated version) that names nothing in the store. A ValueError, so callers
    that catch those still do; the CLI makes it bad usage (exit 2), as click does a missing path."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"key must be a non-empty string, got {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey(f"key contains control characters: {key!r}")
    if key.startswith("/") or "\\" in key or (len(key) > 1 and key[1] == ":"):
        raise InvalidKey(f"key must be relative with '/' separators, got {key!r}")
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        raise InvalidKey(f"key must not contain '.' or '..' segments, got {key!r}")
    if any(p == "" for p in parts[:-1]):
        raise InvalidKey(f"key must not contain empty segments, got {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # seconds since the epoch
    etag: str | None = None


class Store(Protocol):
    """What tasks and the CLI need from object storage."""

    uri: str

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes: ...
    def head(self, key: str) -> ObjectInfo: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def exists(self, key: str) -> bool: ...
    def write_pointer(self, key: str, value: str) -> None: ...
    def read_pointer(self, key: str) -> str | None: ...


class _Pointers:
    """Pointers (``curated/LATEST``, ``models/CHAMPION``): one small object, replaced whole.

    Both stores replace an object atomically (``os.replace``; a single S3 PUT), so a reader sees
    the old or the new value, never a mix.
    """

    def write_pointer(self, key: str, value: str) -> None:
        self.put(key, value.encode())

    def read_pointer(self, key: str) -> str | None:
        try:
            return self.get(key).decode().strip() or None
        except ObjectMissing:
            return None


class LocalStore(_Pointers):
    """A folder on disk; writes go to a temporary file and are moved into place atomically."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if self.root not in path.parents:
            raise InvalidKey(f"key escapes the store: {key!r}")
        return path

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLarge(f"{key}: {size} bytes exceeds the limit of {max_bytes}")
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None

    def head(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in lexicographic order by key (as S3).

        Only the folder the prefix names is walked (``uploads/clinic-7/`` and ``results/j/part-``
        do not read the rest of the store); a prefix no valid key can have lists nothing.
        """
        folder = prefix.rpartition("/")[0]
        try:
            start = self._path(folder) if folder else self.root
        except InvalidKey:
            return
        if not start.is_dir():
            return
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        for key in keys:
            if key.startswith(prefix):
                try:
                    st = (self.root / key).stat()
                except FileNotFoundError:  # deleted since the walk
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


_TRANSIENT = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
)


def _is_missing(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound")


def _is_transient(err: ClientError) -> bool:
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = err.response.get("Error", {}).get("Code", "")
    # S3 says SlowDown; other AWS APIs (SQS, for upload events) say Throttling*/RequestThrottled.
    return status >= 500 or code in (
        "SlowDown",
        "RequestTimeout",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
    )


_ATTEMPTS = 4  # S3Store.get: one try and three retries, as the client's standard mode
_BACKOFF_S = 1.0  # the first retry waits up to this long, each next one up to twice as long
_URL_S = 600  # how long a GET's presigned URL stays valid: longer than its retries take
_ERROR_BODY = 64 * 1024


def _client_error(raw: urllib3.BaseHTTPResponse, status: int, operation: str) -> ClientError:
    """The ClientError botocore would raise for an S3 error answer (its XML Code and Message)."""
    try:
        body = raw.read(_ERROR_BODY)
    except (urllib3.exceptions.HTTPError, OSError):
        body = b""
    finally:
        raw.close()
        raw.release_conn()
    try:
        doc = ElementTree.fromstring(body)
        code, message = doc.findtext("Code"), doc.findtext("Message")
    except ElementTree.ParseError:
        code = message = None
    error = {"Code": code or str(status), "Message": message or f"HTTP {status}"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def _read_body(key: str, raw: urllib3.BaseHTTPResponse, max_bytes: int | None) -> bytes:
    """All of ``raw``'s body, refused over ``max_bytes`` and never silently short."""
    try:
        declared = raw.headers.get("Content-Length")
        if declared is not None:
            size = int(declared)
            # Refuse on the declared length before reading any of the body.
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(f"{key}: {size} bytes exceeds the limit of {max_bytes}")
            # One read of the declared length: one copy out of the socket (chunked reads and a
            # join copy every byte twice more, 3 ms of CPU per 2.9 MB photo).
            data = raw.read()
            if len(data) != size:
                raise StoreUnavailable(f"S3 read of {key} failed: {len(data)} of {size} bytes")
            return data
        chunks, total = [], 0
        for chunk in raw.stream(_CHUNK):
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise ObjectTooLarge(f"{key}: more than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except (ObjectTooLarge, StoreUnavailable):
        raise
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:  # ValueError: a bad length
        raise StoreUnavailable(f"S3 read of {key} failed: {type(err).__name__}") from err
    finally:
        # Read whole, the connection is back in the pool already; otherwise it is closed here.
        raw.close()
        raw.release_conn()


class S3Store(_Pointers):
    """An S3 bucket (or a prefix in one) via boto3; MinIO and moto work through endpoint_url."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client=None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        # Retry policy and timeouts are set once, here, where the client is made.
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=3,
                read_timeout=30,
                s3={"addressing_style": "path"},
                # No CRC32 over every download: 0.9 ms of CPU per 2.9 MB photo (2% of scoring
                # one). Transit is guarded by TCP/TLS and the declared length, uploads from
                # phones (presigned PUTs) carry no checksum to check, and model weights are
                # checked against their card's sha256 (registry).
                response_checksum_validation="when_required",
            ),
        )
        # The pool, proxies, CA bundle and timeouts the client was made with (get's downloads).
        self._http = self.client._endpoint.http_session

    def _k(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, fn, key: str, **kwargs):
        try:
            return fn(Bucket=self.bucket, Key=self._k(key), **kwargs)
        except ClientError as err:
            if _is_missing(err):
                raise ObjectMissing(key) from None
            if _is_transient(err):
                raise StoreUnavailable(f"S3 {fn.__name__} {key}: {err}") from err
            raise
        except _TRANSIENT as err:
            raise StoreUnavailable(f"S3 unreachable: {type(err).__name__}") from err

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes, read whole; ``max_bytes`` refuses a bigger object.

        A GET of a presigned URL on the client's own connection pool (its proxies, CA bundle and
        timeouts), not ``client.get_object``: botocore's event hooks, signing and parsing of every
        response header cost more CPU than presigning (0.14 ms). Per GET from moto: 0.67 against
        1.15 ms of client CPU for 200 kB, 1.35 against 1.70 for 2.9 MB, and less GIL time that the
        inference thread waits for. Connection failures and 5xx/throttling answers are retried as
        the client's standard mode does (4 attempts, jittered backoff); a body that breaks off is
        not (StoreUnavailable: the task retries its batch).
        """
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._k(key)}, ExpiresIn=_URL_S
        )
        request = AWSRequest(method="GET", url=url).prepare()
        request.stream_output = True  # the body stays unread until _read_body
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.0, min(20.0, _BACKOFF_S * 2.0 ** (attempt - 1))))
            try:
                resp = self._http.send(request)
            except _TRANSIENT as err:
                failure = StoreUnavailable(f"S3 unreachable: {type(err).__name__}")
                continue
            if resp.status_code < 300:
                return _read_body(key, resp.raw, max_bytes)
            err = _client_error(resp.raw, resp.status_code, "GetObject")
            if _is_missing(err):
                raise ObjectMissing(key)
            if not _is_transient(err):
                raise err
            failure = StoreUnavailable(f"S3 get {key}: {err}")
        raise failure

    def head(self, key: str) -> ObjectInfo:
        resp = self._call(self.client.head_object, key)
        return ObjectInfo(
            key, resp["ContentLength"], resp["LastModified"].timestamp(), resp.get("ETag")
        )

    def put(self, key: str, data: bytes) -> None:
        self._call(self.client.put_object, key, Body=data)

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        # A "folder" the S3 console or a sync tool made: not an object a
                        # LocalStore could hold, and to a scoring job an `empty` error row.
                        continue
                    yield ObjectInfo(
                        obj["Key"][len(self.prefix) :],
                        obj["Size"],
                        obj["LastModified"].timestamp(),
                        obj.get("ETag"),
                    )
        except ClientError as err:
            if _is_transient(err):
                raise StoreUnavailable(f"S3 list {prefix}: {err}") from err
            raise
        except _TRANSIENT as err:
            raise StoreUnavailable(f"S3 unreachable: {type(err).__name__}") from err

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectMissing:
            return False
        return True

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (MinIO/moto convenience)."""
        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as err:
                if _is_transient(err):
                    raise StoreUnavailable(f"S3 head_bucket {self.bucket}: {err}") from err
                self.client.create_bucket(Bucket=self.bucket)
        except _TRANSIENT as err:
            # A worker's first store use may meet an outage: retryable, not a task failure.
            raise StoreUnavailable(f"S3 unreachable: {type(err).__name__}") from err


def open_store(uri: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> Store:
    """A store from ``s3://bucket[/prefix]`` or a folder path."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ValueError(f"S3 store URI needs a bucket: {uri!r} (expected s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region)
    return LocalStore(uri)
