"""Dataset resolution: mirror directory -> installed package -> official download (checksummed).

Every domain's ``fetch`` goes through :func:`resolve`; nothing else in the project downloads data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.files.atomic import atomic_path

MIRROR_ENV = "TRANSFERLAB_MIRROR"


class SourceError(RuntimeError):
    """A file could not be obtained or failed verification; the message names file, URL and checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it lives in a mirror, where it lives online, and how to verify it.

    ``sha256``/``md5`` describe the *official* bytes. A mirror copy that is a faithful rebuild rather
    than a byte copy sets ``mirror_exact=False`` and is checked by content (the domain's ``validate``).
    """

    mirror_path: str
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None
    mirror_exact: bool = True

    def describe(self) -> str:
        """Human-readable identity: path, URL, checksum."""
        checksum = f"sha256 {self.sha256}" if self.sha256 else f"md5 {self.md5}" if self.md5 else "no checksum"
        return f"'{self.mirror_path}' (official URL: {self.url or 'none'}; {checksum})"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: str | None = None, md5: str | None = None) -> None:
    """Raise :class:`SourceError` if ``path`` does not match the given checksum(s)."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise SourceError(f"{path}: {algorithm} mismatch: expected {expected}, got {actual}")


def mirror_root() -> Path | None:
    """The mirror directory from ``TRANSFERLAB_MIRROR``, or None when unset."""
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise SourceError(f"{MIRROR_ENV}={value} is not a directory")
    return path


def download(url: str, dest: Path, *, sha256: str | None = None, md5: str | None = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` atomically and verify its checksum."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        verify(tmp, sha256=sha256, md5=md5)
    return dest


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)


def resolve(remote: RemoteFile, dest: Path, *, package: Callable[[], Path | None] | None = None) -> Path:
    """Put ``remote`` at ``dest``: from the mirror, else from an installed package, else download.

    ``package`` returns a local path inside an installed package (or None when not installed).
    Raises :class:`SourceError` naming the file, its official URL and checksum when all fail.
    """
    attempts: list[str] = []
    mirror = mirror_root()
    if mirror is not None:
        src = mirror / remote.mirror_path
        if src.exists():
            if src.is_file() and remote.mirror_exact:
                verify(src, sha256=remote.sha256, md5=remote.md5)
            _link_or_copy(src, dest)
            return dest
        attempts.append(f"not in mirror {mirror}")
    else:
        attempts.append(f"{MIRROR_ENV} is not set")
    if package is not None:
        local = package()
        if local is not None and local.exists():
            _link_or_copy(local, dest)
            return dest
        attempts.append("the package that embeds it is not installed")
    if remote.url:
        try:
            return download(remote.url, dest, sha256=remote.sha256, md5=remote.md5)
        except (OSError, SourceError) as err:
            attempts.append(f"download failed: {err}")
    raise SourceError(f"cannot obtain {remote.describe()}: " + "; ".join(attempts))


def package_file(package: str, *parts: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing it (None if absent)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent.joinpath(*parts)
