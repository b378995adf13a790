"""Figures of runs and network diagrams drawn from θ."""
