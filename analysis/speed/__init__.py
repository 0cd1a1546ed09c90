"""Latency and memory: the interleaved timer, model variants, the training step, ICPE."""
