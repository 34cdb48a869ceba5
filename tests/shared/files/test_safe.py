"""Only safe loaders: no pickle payload runs, no archive member escapes (RELIABILITY 6)."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from shared.files.safe import UnsafeArchiveError, UnsafeFileError, load_torch_weights, safe_extract


class Payload:
    """Unpickling this creates ``marker``: stands in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _written_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": Payload(marker)}, weights)
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_torch_weights(weights)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # control: the same payload runs under a plain unpickler
    assert marker.exists()


def test_plain_weights_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.arange(3)}, path)
    assert torch.equal(load_torch_weights(path)["w"], torch.arange(3))


def test_safe_tar_extracts(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tar.gz", {"a.txt": b"a", "sub/b.txt": b"b"}, mode="w:gz")
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == [dest / "a.txt", dest / "sub" / "b.txt"]
    assert (dest / "sub" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("evil", ["../x", "sub/../../x", "/tmp/transferlab-abs-x"])
def test_tar_escaping_member_is_refused_and_nothing_written(tmp_path: Path, evil: str) -> None:
    archive = _tar(tmp_path / "bad.tgz", {"fine.txt": b"ok", evil: b"pwned"}, mode="w:gz")
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.tgz.*{evil}"):
        safe_extract(archive, dest)
    assert _written_files(tmp_path) == {archive}
    assert not Path(evil).is_absolute() or not Path(evil).exists()


def test_tar_link_outside_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(link)
    with pytest.raises(UnsafeArchiveError, match="escape"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "escape").exists()


@pytest.mark.parametrize("evil", ["../x", "/abs/x"])
def test_zip_escaping_member_is_refused(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(evil, "pwned")
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.zip.*{evil}"):
        safe_extract(archive, tmp_path / "out")
    assert _written_files(tmp_path) == {archive}


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(archive, tmp_path / "out")


def test_safe_zip_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/a.txt", "a")
    dest = tmp_path / "out"
    assert safe_extract(archive, dest) == [dest / "d" / "a.txt"]
