"""Slide files in, tile coordinates out: reading (OpenSlide), mpp, tissue, tiling, inputs and manifests."""
