"""Placeholder until engine metrics land."""
