"""Experiment tracking with MLflow — the only package of refsam that imports mlflow.

- :mod:`.store`: tracking URI (``sqlite:///<project>/mlruns/mlflow.db`` by default,
  artifacts in ``mlruns/artifacts/``), clients, one experiment per config family.
- :mod:`.runs`: :class:`MlflowRunLogger` (the ``RunLogger`` protocol by explicit run id,
  safe in Prefect task threads), training runs (resumable) and evaluation runs.
- :mod:`.registry` / :mod:`.resolve`: register checkpoints as pyfunc model versions,
  the ``champion`` alias (strict improvement only), ``models:/refsam@champion`` → path.
- :mod:`.champion`: the retrain's champion policy (register, re-score if the eval data
  changed, promote on a strict improvement).
- :mod:`.compare`: recent training runs side by side (``refsam runs compare``), the
  champion's run marked.
"""

from refsam.tracking.champion import ChampionDecision, decide_champion
from refsam.tracking.compare import compare_runs
from refsam.tracking.plots import log_jf_plot, plot_series
from refsam.tracking.provenance import flatten_params, metric_key
from refsam.tracking.registry import (
    Champion,
    ChampionMismatchError,
    Decision,
    get_champion,
    promote_if_better,
    register_checkpoint,
)
from refsam.tracking.resolve import resolve_model_uri
from refsam.tracking.runs import (
    MlflowRunLogger,
    eval_metric_key,
    log_evaluation,
    start_evaluation_run,
    start_training_run,
)
from refsam.tracking.store import experiment_name, get_client, read_client, tracking_uri

__all__ = [
    "Champion",
    "ChampionDecision",
    "ChampionMismatchError",
    "Decision",
    "MlflowRunLogger",
    "compare_runs",
    "decide_champion",
    "eval_metric_key",
    "experiment_name",
    "flatten_params",
    "get_champion",
    "get_client",
    "log_evaluation",
    "log_jf_plot",
    "metric_key",
    "plot_series",
    "promote_if_better",
    "read_client",
    "register_checkpoint",
    "resolve_model_uri",
    "start_evaluation_run",
    "start_training_run",
    "tracking_uri",
]
