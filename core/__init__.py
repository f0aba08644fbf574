"""The shared kernel of Trainyard: configuration, the job spec, the job store, S3 access,
the backbone registry and the model artifact. `service/`, `jobs/` and `serving/` all build on it."""
