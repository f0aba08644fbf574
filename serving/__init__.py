"""Ray Serve: one multiplexed, batched classifier deployment that serves every published model."""
