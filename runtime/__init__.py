"""Ripple runtime: the FastAPI server, the generators and the command line."""
