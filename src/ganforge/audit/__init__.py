"""Memorisation audit: exact chunked k-NN and the nearest-neighbour report."""
