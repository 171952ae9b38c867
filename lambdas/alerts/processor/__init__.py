"""Alert processor: validates device alerts stored in S3, indexes them and forwards a minimal,
pseudonymous view of each to the external classification service."""
