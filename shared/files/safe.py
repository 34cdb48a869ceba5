"""Safe loading of files we did not write: archives that stay inside their folder, weights-only torch."""

from __future__ import annotations

import pickle
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination, is a link or device, or is absolute."""


class UnsafeFileError(ValueError):
    """A file needs more than tensors and plain values to load (e.g. a pickle that runs code)."""


def _check_name(archive: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or PureWindowsPath(name).drive:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute or parent-relative path")


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:  # check everything before writing anything
            _check_name(archive, member.name)
            try:
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} refused: {exc}") from exc
        tar.extractall(dest, filter="data")
    return [m.name for m in members if m.isfile()]


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symlink")
            if not (root / info.filename).resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} resolves outside {dest}")
        zf.extractall(dest)
    return [i.filename for i in infos if not i.is_dir()]


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a .zip or tar (.tar, .tar.gz, .tgz, ...) into ``dest``; return the extracted files.

    Raises ``UnsafeArchiveError`` naming the archive and member before anything is written if a member
    is absolute, climbs out with ``..``, is a link pointing outside (zip: any symlink) or a device.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        names = _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        names = _extract_tar(archive, dest)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")
    return sorted(dest / name for name in names)


def load_torch_weights(path: Path) -> dict:
    """``torch.load(path, weights_only=True, map_location="cpu")``; refuse anything that is not weights.

    A pickle that needs arbitrary globals raises ``UnsafeFileError`` naming the file; its code never runs.
    """
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(f"{path}: refused by the weights-only loader: {exc}") from exc
    if not isinstance(obj, dict):
        raise UnsafeFileError(f"{path}: holds a {type(obj).__name__}, not a dict of weights")
    return obj
