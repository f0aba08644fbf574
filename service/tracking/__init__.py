"""MLflow: every job mirrored as a run, its model registered, Trainyard's aliases mirrored (`TRAINYARD_MLFLOW_*`).

The API does it, after the fact, from the store: a background pass every `mlflow_sync_interval_s` brings each
job's run up to date with what the job has recorded (parameters, per-epoch metrics, the LR sweep, the plots,
the evaluation, the report, the model) and what is logged is remembered per job (`mlflow_runs`), so the mirror
resumes where it stopped, after an MLflow outage or an API restart alike.

Why the API and not the job's driver: a job never talks to MLflow, so a tracking server that is down or slow
cannot fail or delay it (the job gets a `tracking_unavailable` warning event, and its run catches up when the
server answers); only the API needs the MLflow client and its configuration, not every Ray node; and alias
moves, which only the API sees, are mirrored by the same code. The price is a few seconds of lag, and the
MLflow client in the API process (imported on the first pass, only when tracking is on).

    runs.py      what each job's run holds already (the mlflow_runs table) and who is syncing it
    mirror.py    one pass: which jobs, what to log, what to do when MLflow does not answer
    content.py   what a job's record becomes in a run (params, metrics, files)
    registry.py  the registered model: its versions and aliases
"""
