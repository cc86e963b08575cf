"""The loopback ISIC server itself (what the isic-cli tests rely on)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.isic_server import IsicTestServer, QueryError, make_records, parse_query


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("query", ["((age", "sex:male OR sex:female", "sex:", "sex:male AND", "x"])
def test_garbage_queries_are_rejected(query):
    with pytest.raises(QueryError):
        parse_query(query)


def test_query_terms():
    assert parse_query('image_type:"clinical: close-up" AND -sex:* age_approx:[20 TO 40]') == [
        (False, "image_type", ("eq", "clinical: close-up")),
        (True, "sex", ("eq", "*")),
        (False, "age_approx", ("range", "20", "40")),
    ]


def test_search_pages_count_and_errors():
    with IsicTestServer(make_records(5), page_size=2) as server:
        status, body = _get(f"{server.url}/api/v2/images/search/?query=&limit=1")
        page = json.loads(body)
        assert status == 200 and page["count"] == 5 and len(page["results"]) == 1
        status, body = _get(f"{server.url}/api/v2/images/search/?query=")
        first = json.loads(body)
        assert len(first["results"]) == 2 and first["next"].startswith(server.url)
        second = json.loads(_get(first["next"])[1])
        assert second["count"] is None and second["results"][0]["isic_id"] == "ISIC_9000002"
        status, body = _get(f"{server.url}/api/v2/images/search/?query=%28%28x")
        assert status == 400 and json.loads(body) == {"message": "Could not parse search query."}
        assert _get(f"{server.url}/api/v2/collections/3/")[0] == 404
        assert _get(f"{server.url}/api/v2/zip-download/license-file/CC-BY-SA/")[0] == 404
        size = json.loads(_get(f"{server.url}/api/v2/images/search/size/?query=")[1])["size"]
        assert size == sum(len(r.data) for r in server.records)
        record = server.records[0]
        media = first["results"][0]["files"]["full"]["url"]
        assert _get(media) == (200, record.data)
        server.fail(record.isic_id, "corrupt")
        assert len(_get(media)[1]) < len(record.data)
        server.fail(record.isic_id, "404")
        assert _get(media)[0] == 404
