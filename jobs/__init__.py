"""The training pipeline that runs on Ray, one Ray job per training job.

    fetch ─► validate ─► lr_sweep ─► fine_tune ─► evaluate ─► publish ─► deploy

`jobs.driver` is the entrypoint (`python -m jobs.driver <job id>`); each stage lives in `jobs.stages`.
"""
