"""RL agents that train the RFS steering policy (one sub-package per algorithm)."""
