"""What the exporter serves: the store of facts, the exporter's own families, the renderer (per
family, per target) and the exposition bytes."""
