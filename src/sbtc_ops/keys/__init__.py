"""Key custody: find and check the signer's private key, make and prove cold backups.

`service` holds the three operations the CLI calls; the other modules are their parts.
The key itself never leaves this package's memory: no output, log, exception, temporary
file or child process ever sees it (see docs/key-custody.md for the limits of wiping).
"""
