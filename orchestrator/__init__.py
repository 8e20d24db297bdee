"""Hydra configs, the `energy-at` command line, Ray Tune sweeps and energy early stopping."""
