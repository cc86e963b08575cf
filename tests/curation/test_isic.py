from __future__ import annotations

import sys
import time

import pytest

from curation import IsicCliError, download_images, isic_cli_version
from curation.isic import build_command
from tests.isic_server import IsicTestServer, make_records, records_from_shared_data


def test_download_writes_images_metadata_attribution_and_licences(isic_server, tmp_path):
    result = download_images(tmp_path / "pull", limit=5, api_url=isic_server.url, timeout=60)

    wanted = [r.isic_id for r in isic_server.records[:5]]
    assert list(result.metadata["isic_id"]) == wanted
    assert sorted(result.images) == sorted(wanted)
    assert result.missing == [] and result.unreadable == {}
    for isic_id, path in result.images.items():
        assert path == tmp_path / "pull" / f"{isic_id}.jpg"
        record = next(r for r in isic_server.records if r.isic_id == isic_id)
        assert path.read_bytes() == record.data
    assert (tmp_path / "pull" / "metadata.csv").is_file()
    attribution = (tmp_path / "pull" / "attribution.txt").read_text()
    assert {r.attribution for r in isic_server.records[:5]} == set(attribution.split("\n\n"))
    licences = {r.copyright_license for r in isic_server.records[:5]}
    assert set(result.licence_files) == licences
    for name in licences:
        assert (tmp_path / "pull" / "licenses" / f"{name}.txt").read_text().strip()
    assert result.isic_cli_version == isic_cli_version() == "12.4.0"


def test_download_follows_pagination_and_stays_anonymous(isic_server, tmp_path):
    download_images(tmp_path, limit=5, api_url=isic_server.url, timeout=60)

    listing = [r for r in isic_server.requests if r.path == "/api/v2/images/search/"]
    cursor_pages = [r for r in listing if "cursor" in r.query]
    assert len(cursor_pages) == 2  # 5 images at 2 per page => pages 2 and 3 via `next`
    assert all(r.headers.get("User-agent", "").startswith("isic-cli/") for r in listing)
    assert not any("Authorization" in r.headers for r in isic_server.requests)
    assert isic_server.paths("/media/") and not isic_server.paths("/api/v2/users/")


def test_download_metadata_is_canonical(isic_server, tmp_path):
    result = download_images(tmp_path, limit=4, api_url=isic_server.url, timeout=60)

    meta = result.metadata.set_index("isic_id")
    for record in isic_server.records[:4]:
        row = meta.loc[record.isic_id]
        assert row["image_type"] == record.acquisition["image_type"]
        assert row["lesion_id"] == record.clinical["lesion_id"]
        expected = {"Malignant": 1.0, "Benign": 0.0}.get(record.clinical["diagnosis_1"])
        if expected is None:
            assert row["malignant"] != row["malignant"]  # NaN for Indeterminate
        else:
            assert row["malignant"] == expected
        assert row["diagnosis"] == record.clinical["diagnosis_3"]


def test_failed_image_download_is_reported_missing_not_lost(isic_server, tmp_path):
    broken, truncated = isic_server.records[1].isic_id, isic_server.records[2].isic_id
    isic_server.fail(broken, "404")
    isic_server.fail(truncated, "corrupt")

    result = download_images(tmp_path, limit=4, api_url=isic_server.url, timeout=60)

    # isic-cli itself exits 0 and keeps the metadata row of the failed image.
    assert broken in set(result.metadata["isic_id"])
    assert result.missing == [broken]
    assert broken not in result.images
    assert set(result.unreadable) == {truncated}
    assert "corrupt" in result.unreadable[truncated]


def test_search_filters_and_counts(isic_server, tmp_path):
    result = download_images(
        tmp_path, search="image_type:dermoscopic", limit=10, api_url=isic_server.url, timeout=60
    )
    expected = [
        r.isic_id for r in isic_server.records if r.acquisition["image_type"] == "dermoscopic"
    ]
    assert list(result.metadata["isic_id"]) == expected
    assert set(result.metadata["image_type"]) == {"dermoscopic"}


def test_collections_filter(tmp_path):
    records = make_records(3, seed=2, collections=(11,)) + make_records(2, seed=3)
    with IsicTestServer(records) as server:
        result = download_images(tmp_path, collections=[11], limit=10, api_url=server.url)
        assert len(result.metadata) == 3
        assert "/api/v2/collections/11/" in server.paths()


def test_bad_query_raises_with_stderr_excerpt(isic_server, tmp_path):
    with pytest.raises(IsicCliError) as info:
        download_images(tmp_path, search="((age_approx", api_url=isic_server.url, timeout=60)
    assert info.value.returncode == 2
    assert "Invalid search query string" in str(info.value)
    assert "Invalid search query string" in info.value.stderr_tail
    assert not isic_server.paths("/media/")


def test_unknown_collection_raises(isic_server, tmp_path):
    with pytest.raises(IsicCliError, match="Collection 404 does not exist"):
        download_images(tmp_path, collections=[404], api_url=isic_server.url, timeout=60)


def test_api_error_is_raised_without_prompting(tmp_path):
    # The server 404s licences it does not know; isic-cli crashes in main() after the images.
    with IsicTestServer(make_records(2, licences=("CC-BY-SA",))) as server:
        with pytest.raises(IsicCliError, match="HTTPError: 404") as info:
            download_images(tmp_path, limit=2, api_url=server.url, timeout=60)
    assert info.value.returncode == 1
    assert "bug report" not in info.value.stderr_tail


def test_build_command_points_isic_cli_at_api_url():
    cmd = build_command("out", search="sex:male", limit=3, api_url="http://127.0.0.1:9/api/v2/")
    assert cmd[:2] == [sys.executable, "-c"]
    assert cmd[3] == "http://127.0.0.1:9"
    assert cmd[4:7] == ["--dev", "--no-version-check", "--guest"]
    assert cmd[-1] == "out" and "--search" in cmd and "sex:male" in cmd


def test_build_command_for_the_real_archive_uses_prod():
    cmd = build_command("out", collections=[1, "2"])
    assert cmd[3] == "" and "--dev" not in cmd
    assert cmd[cmd.index("--collections") + 1] == "1,2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": -1}, "limit must be >= 0"),
        ({"collections": ["x1"]}, "collection ids must be integers"),
        ({"api_url": "127.0.0.1:8000"}, "api_url must be an http"),
    ],
)
def test_build_command_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_command("out", **kwargs)


def test_timeout_raises(tmp_path):
    with IsicTestServer(make_records(1)) as server:
        with pytest.raises(IsicCliError, match="timed out") as info:
            download_images(tmp_path, api_url=server.url, timeout=0.01)
    assert info.value.returncode is None


def test_download_real_shared_images(shared_data, tmp_path):
    records = records_from_shared_data(6, root=shared_data)
    with IsicTestServer(records, page_size=4) as server:
        result = download_images(tmp_path, limit=6, api_url=server.url, timeout=60)
    assert sorted(result.images) == sorted(r.isic_id for r in records)
    assert set(result.metadata["image_type"]) == {"clinical: close-up", "dermoscopic"}
    assert set(result.licence_files) == {"CC-BY", "CC-BY-NC"}
    assert result.metadata["malignant"].isin([0.0, 1.0]).all()


def test_should_stop_kills_isic_cli_and_raises(tmp_path):
    # Nothing listens on the port, so isic-cli would retry for minutes; the stop ends it at once.
    from benchmarks._stack import free_port

    asked: list[float] = []

    def should_stop() -> bool:
        asked.append(time.monotonic())
        return len(asked) >= 2  # the second poll, ~1 s in

    began, nowhere = time.monotonic(), f"http://127.0.0.1:{free_port()}"
    with pytest.raises(IsicCliError, match="stopped on request") as info:
        download_images(tmp_path, api_url=nowhere, timeout=300, should_stop=should_stop)
    assert info.value.returncode is None
    assert len(asked) == 2 and time.monotonic() - began < 10
