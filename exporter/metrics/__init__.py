"""What the exporter serves: the store of snapshots, the renderer, the exposition bytes."""
