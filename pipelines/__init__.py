"""Thin stage entry points: ``python -m pipelines.<stage> --domain X [--regime Y]``."""
