"""The verbs that change deployments state, one module per part: releases and their gates
(releases.py), deployment jobs (jobs.py). Views, the API and tasks call these."""

from .jobs import *  # noqa: F403
from .releases import *  # noqa: F403
