"""Signed evidence of restore drills: in-toto statements signed with SSH signatures (SSHSIG),
stored beside the backup, verifiable with OpenSSH alone (docs/attestations.md)."""
