"""LocalStore.list: S3's prefix semantics and order, walking only the folder the prefix names."""

from __future__ import annotations

from pathlib import Path

from workers.store import LocalStore


def _keys(st: LocalStore, prefix: str) -> list[str]:
    return [o.key for o in st.list(prefix)]


def test_list_has_s3_prefix_semantics_and_order(tmp_path):
    st = LocalStore(tmp_path / "root")
    for key in ("uploads/a/p.jpg", "uploads-b.jpg", "uploads/ab.jpg", "results/j/part-00001.jsonl"):
        st.put(key, b"x")
    assert _keys(st, "") == [
        "results/j/part-00001.jsonl", "uploads-b.jpg", "uploads/a/p.jpg", "uploads/ab.jpg",
    ]  # fmt: skip
    assert _keys(st, "uploads") == ["uploads-b.jpg", "uploads/a/p.jpg", "uploads/ab.jpg"]
    assert _keys(st, "uploads/a") == ["uploads/a/p.jpg", "uploads/ab.jpg"]
    assert _keys(st, "uploads/a/") == ["uploads/a/p.jpg"]
    assert _keys(st, "results/j/part-") == ["results/j/part-00001.jsonl"]
    assert _keys(st, "nope/") == _keys(st, "../") == _keys(st, "/etc/") == []


def test_list_walks_only_the_folder_its_prefix_names(tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "root")
    st.put("raw/big/1.jpg", b"x")
    st.put("uploads/c7/a.jpg", b"x")
    walked = []
    rglob = Path.rglob

    def recording(self, pattern):
        walked.append(self.relative_to(st.root).as_posix())
        return rglob(self, pattern)

    monkeypatch.setattr(Path, "rglob", recording)
    assert _keys(st, "uploads/c7/") == ["uploads/c7/a.jpg"]
    assert walked == ["uploads/c7"]


def test_list_does_not_follow_a_link_out_of_the_store(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    st = LocalStore(tmp_path / "root")
    st.put("uploads/a.jpg", b"x")
    (st.root / "uploads" / "link").symlink_to(outside, target_is_directory=True)
    assert _keys(st, "uploads/") == ["uploads/a.jpg"]
    assert _keys(st, "uploads/link/") == []
