"""Start the web service: ``python -m releasecenter.serve [uvicorn options]``.

It prepares what metrics across processes need, then becomes uvicorn (exec) serving
``releasecenter.asgi:application`` with WEB_CONCURRENCY processes (uvicorn reads the variable
itself). The Procfile's ``web`` line, the image's command and the Kubernetes web Deployment all
start the web service this way, so ``WEB_CONCURRENCY=2 honcho start web`` is all it takes.

Each uvicorn process counts requests in its own files under PROMETHEUS_MULTIPROC_DIR, and /metrics
sums them (releasecenter/metrics.py). The directory must be emptied before the processes start:
files left from an earlier run would be added to this run's counts. It defaults to
``$RELEASECENTER_VAR_DIR/prometheus-web``; on a read-only root file system point it at a writable
volume (the manifests mount an emptyDir).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

APP = "releasecenter.asgi:application"


def multiprocess_dir() -> Path:
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        return Path(configured)
    var = os.environ.get("RELEASECENTER_VAR_DIR") or Path(__file__).resolve().parents[1] / "var"
    return Path(var) / "prometheus-web"


def prepare_multiprocess_dir(path: Path) -> None:
    """An empty directory for this run's metric files (the directory itself may be a mount)."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def main(argv: list[str]) -> None:
    directory = multiprocess_dir()
    prepare_multiprocess_dir(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", APP, *argv])  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
