"""One slide end to end (tiles -> embeddings -> MIL -> calibrated decision -> report) and many slides."""
