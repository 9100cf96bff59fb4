"""Command line (tyro) and presets for rfs_jax."""
