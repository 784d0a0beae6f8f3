"""The model-backed stages, one module each: tagging, grounding, proposals, segmentation, concepts, binding."""
