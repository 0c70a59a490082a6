"""The one encoder pass: tile embeddings, tile probabilities and QC descriptors; the features h5."""
