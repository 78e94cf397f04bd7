"""The store: where releases live. The repository (builds, channels, history), its database (SQLite or
PostgreSQL, numbered migrations), content-addressed blobs (a folder or S3), trusted signing keys, API tokens,
delta patch records and the stored server clock. Imports nothing from the fleet or the faces."""
