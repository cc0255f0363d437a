"""Collecting: the scheduler, the snapshot a run produces, sharding."""
