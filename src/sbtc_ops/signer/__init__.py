"""Knowledge of the sBTC signer itself: its releases, configuration and upgrades."""
