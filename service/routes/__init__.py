"""One router per resource; each route calls the store and the launcher, nothing else."""
