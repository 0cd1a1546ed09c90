"""Analyses: costs, benchmarks, modulation probe, metrics, figures and the report."""
