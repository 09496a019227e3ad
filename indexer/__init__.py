"""Ripple indexer: documents in, chunks embedded with sentence-transformers, points in Qdrant.

Imports nothing of `runtime` or `guards`; the runtime and the CLI use it as a library.
"""
