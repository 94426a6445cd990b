"""Models of the deployments app, one module per part: releases and their gates (releases.py),
deployment jobs and their runners' records (jobs.py)."""

from .jobs import *  # noqa: F403
from .releases import *  # noqa: F403
