"""`distilbench serve`: a classifier behind HTTP with micro-batching."""
