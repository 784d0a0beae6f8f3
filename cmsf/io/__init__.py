"""Inputs and files: accepted forms, decoding (PyAV), media on disk, the AVSBench layouts, AudioSet labels, atomic files."""
