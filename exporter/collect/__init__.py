"""Collecting: the scheduler, the provider HTTP client, failure reasons, sharding."""
