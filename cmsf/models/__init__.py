"""Models: loading, presets and sources, the random builders, ImageBind, MAVL and Meta's image transform."""
