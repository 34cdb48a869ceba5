"""shared.data.sources: checksummed downloads (against a local HTTP server) and mirror -> package -> URL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.data.sources import MIRROR_ENV, RemoteFile, SourceError, download, resolve

PAYLOAD = b"official bytes of a tiny dataset\n" * 100
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
WRONG_SHA256 = "0" * 64


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 (random port) serving ``tmp_path/www``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture()
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)


@pytest.fixture()
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TRANSFERLAB_MIRROR`` -> an empty folder."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(root))
    return root


def missing_url(tmp_path: Path) -> str:
    return (tmp_path / "nowhere" / "data.bin").as_uri()


@pytest.mark.parametrize("checksum", [{"sha256": SHA256}, {"md5": MD5}, {"sha256": SHA256, "md5": MD5}])
def test_download_verifies_checksum(server: str, tmp_path: Path, checksum: dict[str, str]) -> None:
    dest = tmp_path / "out" / "data.bin"
    assert download(f"{server}/data.bin", dest, **checksum) == dest
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]


@pytest.mark.parametrize(("checksum", "expected", "algorithm"), [
    ({"sha256": WRONG_SHA256}, WRONG_SHA256, "sha256"),
    ({"md5": "f" * 32}, "f" * 32, "md5"),
])
def test_download_checksum_mismatch_leaves_nothing(server: str, tmp_path: Path, checksum: dict[str, str],
                                                   expected: str, algorithm: str) -> None:
    out = tmp_path / "out"
    actual = SHA256 if algorithm == "sha256" else MD5
    with pytest.raises(SourceError, match=f"{algorithm} mismatch: expected {expected}, got {actual}"):
        download(f"{server}/data.bin", out / "data.bin", **checksum)
    assert list(out.iterdir()) == []  # neither the file nor its temp file


def test_download_http_error_leaves_nothing(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OSError, match="404"):
        download(f"{server}/absent.bin", out / "absent.bin", sha256=SHA256)
    assert list(out.iterdir()) == []


def test_download_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "dest.bin", sha256=SHA256)
    assert dest.read_bytes() == PAYLOAD


def test_resolve_prefers_the_mirror(mirror: Path, tmp_path: Path) -> None:
    (mirror / "set").mkdir()
    (mirror / "set" / "data.bin").write_bytes(PAYLOAD)
    calls: list[int] = []

    def package() -> Path:
        calls.append(1)
        return tmp_path / "unused"

    remote = RemoteFile("set/data.bin", url=missing_url(tmp_path), sha256=SHA256)
    dest = resolve(remote, tmp_path / "raw" / "data.bin", package=package)
    assert dest.read_bytes() == PAYLOAD
    assert calls == []  # the package source is not even asked


def test_resolve_copies_a_mirror_folder(mirror: Path, tmp_path: Path) -> None:
    (mirror / "tree" / "train").mkdir(parents=True)
    (mirror / "tree" / "train" / "a.txt").write_text("a")
    dest = resolve(RemoteFile("tree"), tmp_path / "raw" / "tree")
    assert (dest / "train" / "a.txt").read_text() == "a"


@pytest.mark.parametrize("with_mirror", [True, False], ids=["not-in-mirror", "mirror-unset"])
def test_resolve_falls_back_to_the_package(with_mirror: bool, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if with_mirror:
        (tmp_path / "mirror").mkdir()
        monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    else:
        monkeypatch.delenv(MIRROR_ENV, raising=False)
    packaged = tmp_path / "site-packages" / "data.bin"
    packaged.parent.mkdir()
    packaged.write_bytes(b"packaged copy")
    remote = RemoteFile("set/data.bin", url=missing_url(tmp_path), sha256=SHA256)
    dest = resolve(remote, tmp_path / "raw" / "data.bin", package=lambda: packaged)
    assert dest.read_bytes() == b"packaged copy"


def test_resolve_downloads_when_mirror_and_package_fail(server: str, mirror: Path, tmp_path: Path) -> None:
    remote = RemoteFile("set/data.bin", url=f"{server}/data.bin", sha256=SHA256)
    dest = resolve(remote, tmp_path / "raw" / "data.bin", package=lambda: None)
    assert dest.read_bytes() == PAYLOAD


def test_resolve_failure_names_mirror_path_url_and_checksum(mirror: Path, tmp_path: Path) -> None:
    url = missing_url(tmp_path)
    remote = RemoteFile("set/data.bin", url=url, sha256=SHA256)
    with pytest.raises(SourceError) as info:
        resolve(remote, tmp_path / "raw" / "data.bin", package=lambda: None)
    message = str(info.value)
    assert message.startswith(f"cannot obtain 'set/data.bin' (official URL: {url}; sha256 {SHA256}): ")
    assert f"not in mirror {mirror}" in message
    assert "the package that embeds it is not installed" in message
    assert "download failed:" in message and "No such file or directory" in message
    assert not (tmp_path / "raw" / "data.bin").exists()


def test_resolve_failure_without_mirror_says_so(no_mirror: None, tmp_path: Path) -> None:
    remote = RemoteFile("set/data.bin", url=missing_url(tmp_path), md5=MD5)
    with pytest.raises(SourceError, match=f"md5 {MD5}\\): {MIRROR_ENV} is not set; download failed"):
        resolve(remote, tmp_path / "raw" / "data.bin")


def test_exact_mirror_file_with_wrong_checksum_raises(mirror: Path, tmp_path: Path) -> None:
    (mirror / "data.bin").write_bytes(PAYLOAD + b"tampered")
    actual = hashlib.sha256(PAYLOAD + b"tampered").hexdigest()
    with pytest.raises(SourceError, match=f"sha256 mismatch: expected {SHA256}, got {actual}"):
        resolve(RemoteFile("data.bin", sha256=SHA256), tmp_path / "raw" / "data.bin")
    assert not (tmp_path / "raw" / "data.bin").exists()


def test_rebuilt_mirror_file_is_not_checked_by_bytes(mirror: Path, tmp_path: Path) -> None:
    # mirror_exact=False: the official checksum describes other bytes; the domain checks the content
    (mirror / "data.bin").write_bytes(b"faithful rebuild")
    remote = RemoteFile("data.bin", sha256=SHA256, mirror_exact=False)
    assert resolve(remote, tmp_path / "data.bin").read_bytes() == b"faithful rebuild"


def test_mirror_env_must_be_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "absent"))
    with pytest.raises(SourceError, match=f"{MIRROR_ENV}=.*absent is not a directory"):
        resolve(RemoteFile("data.bin"), tmp_path / "data.bin")
