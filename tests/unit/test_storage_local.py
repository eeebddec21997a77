"""The local-folder object store used by the embedded mode."""

from __future__ import annotations

import pytest

from fleet.storage import AccessDenied, InvalidObjectURI, ObjectNotFound, ObjectStore, ObjectTooLarge, parse_uri


def test_round_trip_and_listing(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    store.put("batches/b1/a.wav", b"abc")
    store.put("batches/b1/sub/b.wav", b"de")
    store.put("batches/b2/c.wav", b"f")
    assert store.get("batches/b1/a.wav") == b"abc"
    root = tmp_path / "objects"
    assert store.head(str(root / "batches/b1/a.wav")).size == 3
    assert [o.uri for o in store.list("batches/b1/")] == [str(root / "batches/b1/a.wav"), str(root / "batches/b1/sub/b.wav")]
    assert store.get(f"file://{root}/batches/b2/c.wav") == b"f"


def test_errors(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    with pytest.raises(ObjectNotFound):
        store.get("nothing.wav")
    with pytest.raises(AccessDenied):  # no escaping the store's folder
        store.get("/etc/passwd")
    with pytest.raises(AccessDenied):
        store.get("../outside.wav")
    store.put("big.bin", b"x" * 10)
    with pytest.raises(ObjectTooLarge):
        store.get("big.bin", max_bytes=9)
    for bad in ["", "http://example.com/a.wav", "s3:///key", "file://host/a"]:
        with pytest.raises(InvalidObjectURI):
            parse_uri(bad)


def test_folder_upload_list_download(tmp_path) -> None:
    store = ObjectStore(tmp_path / "objects")
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"123")
    store.upload_folder(src, "adapters/v1")
    store.put("adapters/v10/other", b"x")  # shares the name's start: not part of v1
    assert set(store.list_relative("adapters/v1")) == {"adapter_config.json", "sub/w.bin"}
    out = store.download_folder("adapters/v1", tmp_path / "cache" / "v1")
    assert (out / "sub" / "w.bin").read_bytes() == b"123" and not (tmp_path / "cache" / "v1.part").exists()
    with pytest.raises(ObjectNotFound):
        store.download_folder("adapters/none", tmp_path / "cache" / "none")
