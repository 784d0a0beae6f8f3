"""cmsf: training-free audio-visual segmentation by Cross-Modality Semantic Filtering.

The public API; every name is documented where it is defined.
"""

from cmsf.metrics import DatasetScores, dataset_scores, fscore, miou
from cmsf.ops import bind_filter, nms

__version__ = "0.1.0"

__all__ = [
    "DatasetScores",
    "bind_filter",
    "dataset_scores",
    "fscore",
    "miou",
    "nms",
]
