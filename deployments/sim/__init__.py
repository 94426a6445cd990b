"""A simulated Kubernetes API server for demos and tests; see ``cluster`` for what it covers."""

from .cluster import SimCluster, add_arguments, main, run, serve
from .objects import ApiError

__all__ = ["ApiError", "SimCluster", "add_arguments", "main", "run", "serve"]
