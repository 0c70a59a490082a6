"""The resumable, sharded, failure-isolating many-slide runner and its state files."""
