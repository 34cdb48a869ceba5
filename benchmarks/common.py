"""Helpers shared by the benchmarks: machine facts, timing, data sources, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def mirror_dir() -> Path:
    """``TRANSFERLAB_MIRROR``, else the shared data mirror beside the repository (``../shared/data``)."""
    env = os.environ.get("TRANSFERLAB_MIRROR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def portable_path(path: Path | str) -> str:
    """``path`` as results record it: relative to the repository root (the default mirror is
    ``../shared/data``), so no result holds the absolute paths of the machine it ran on."""
    return Path(os.path.relpath(Path(path).resolve(), REPO_ROOT)).as_posix()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, library versions, load at the time of the run."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import timm
        import transformers

        info.update(timm=timm.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return info


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, list[float]]:
    """The fastest of ``repeats`` calls and all times (the minimum is the least disturbed by other load)."""
    times = [timed(fn)[0] for _ in range(repeats)]
    return min(times), times


def max_rss_mb() -> float:
    """This process's peak resident set size so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cifar_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` CIFAR-10 training images (N, 32, 32, 3) uint8 and labels from the mirror's binary archive,
    else seeded synthetic uint8 images (the source is returned as the third value)."""
    archive = mirror_dir() / "cifar10" / "cifar-10-binary.tar.gz"
    if archive.is_file():
        records = []  # the mirror holds a subset of each official batch (1017 records each): read on
        with tarfile.open(archive) as tar:
            for member in sorted((m for m in tar.getmembers() if "data_batch_" in m.name), key=lambda m: m.name):
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                records.append(np.frombuffer(data[: len(data) // 3073 * 3073], dtype=np.uint8).reshape(-1, 3073))
                if sum(len(r) for r in records) >= n:
                    break
        raw = np.concatenate(records)[:n]
        n = len(raw)
        images = raw[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        return images, raw[:, 0].astype(np.int64), portable_path(archive)
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=n),
            "synthetic uint8")


def sst2_sentences(n: int) -> tuple[list[str], np.ndarray, str]:
    """``n`` SST-2 training sentences from the mirror's GLUE TSV, else simple generated sentences."""
    tsv = mirror_dir() / "glue" / "SST-2" / "train.tsv"
    if tsv.is_file():
        lines = tsv.read_text(encoding="utf-8").splitlines()[1 : n + 1]
        texts, labels = zip(*(line.rsplit("\t", 1) for line in lines), strict=True)
        return list(texts), np.asarray(labels, dtype=np.int64), portable_path(tsv)
    words = ["good", "bad", "film", "story", "acting", "boring", "great", "plot", "a", "the", "very"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 25)))) for _ in range(n)]
    return texts, rng.integers(0, 2, size=n), "synthetic sentences"


def write_result(name: str, data: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """``<out_dir>/<name>.json`` with the numbers, the settings and the machine."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), **data}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def setup_regime(model: Any, regime: str, dp: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``model`` prepared by the registered network regime ``regime`` (no feature cache: not for lp_ft);
    returns the model to train and its optimizer groups."""
    from datasets import DatasetDict

    from shared.registry import get_regime
    from shared.testing.regimes import tiny_context

    ctx = tiny_context(dp, model.modality, DatasetDict(), Path("unused"))
    prepared = get_regime(regime).for_domain(dp).prepare(model, ctx)
    return prepared.model, prepared.param_groups
