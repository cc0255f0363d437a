"""Collecting: the target table, the scheduler, the snapshot a run produces, sharding."""
