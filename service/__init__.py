"""The LinguDistill REST service: a jobs API over Postgres (or SQLite) and S3 (or a local directory)."""
