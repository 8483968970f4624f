"""Scoring of detector output against labelled benchmarks (pure numpy, no Django)."""
