"""ladarun's Hydra launchers (Hydra accepts a launcher only from the hydra_plugins package)."""
