"""`sbtc-ops serve`: scheduled backups, verification, audits and chain checks; Prometheus
metrics, a status page and webhooks, all read from the state database."""
