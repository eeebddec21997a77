"""Training defaults and job parameters: re-exported from `fleet.training_config`.

They live in `fleet/` because the gateway checks a job's params when ops create it (422 on a bad
key) and must not import `training_jobs`; the training code keeps importing them from here.
"""

from fleet.training_config import (  # noqa: F401
    ASPECT_KEYS,
    DEFAULT_HEADLINE,
    TUNABLE_KEYS,
    JobParams,
    ParamsError,
    TrainingDefaults,
    resolve_params,
)

__all__ = ["ASPECT_KEYS", "DEFAULT_HEADLINE", "TUNABLE_KEYS", "JobParams", "ParamsError", "TrainingDefaults",
           "resolve_params"]
