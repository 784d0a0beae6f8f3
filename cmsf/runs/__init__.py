"""Many videos: the runner, evaluation, sweeps and their cache, segment-many (local, Ray), outputs, reports."""
