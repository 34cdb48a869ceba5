"""What code a stage runs: the project files a module imports, followed statically through every
``import`` (module level or inside functions), and content digests of files and folders.

``tests/test_dvc_deps.py`` checks that every stage of ``dvc.yaml`` depends on its closure, and the train
stage keys its resumable checkpoints by the digest of its closure and of its data inputs.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

PROJECT_PACKAGES = ("shared", "domains", "pipelines")
CODE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding shared/, domains/ and pipelines/


def module_file(root: Path, module: str) -> Path | None:
    """The project file of a dotted module name (package ``__init__.py`` or module ``.py``), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for the type checker never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imported_modules(path: Path, module: str) -> set[str]:
    """Dotted names imported by one file (relative imports resolved; ``from a import b`` yields a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def import_closure(modules: Iterable[str], root: Path = CODE_ROOT) -> set[Path]:
    """Every project file (under :data:`PROJECT_PACKAGES`) that ``modules`` import, transitively, including
    the parent packages' ``__init__.py`` files that Python runs on the way. A module of another package
    (an installed plugin) contributes its own file."""
    todo = list(modules)
    modules_given, seen, files = set(todo), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.split(".")[0] not in PROJECT_PACKAGES:
            if name in modules_given:
                spec = importlib.util.find_spec(name)
                if spec is not None and spec.origin and Path(spec.origin).is_file():
                    files.add(Path(spec.origin))
            continue
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        path = module_file(root, name)
        if path is None:
            continue
        files.add(path)
        todo += sorted(_imported_modules(path, name))
    return files


def digest_files(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 over the paths (relative to ``root`` where they lie below it) and contents of ``paths``
    (folders: every file below them), sorted."""
    files: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files |= {f for f in path.rglob("*") if f.is_file()}
        elif path.is_file():
            files.add(path)
    digest = hashlib.sha256()
    for f in sorted(files):
        name = f.relative_to(root) if f.is_relative_to(root) else f
        digest.update(str(name).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
