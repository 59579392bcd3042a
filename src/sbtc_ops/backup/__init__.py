"""Taking, storing, listing, pruning and restoring signer database backups."""
