"""The SQL transcript store and directory (SQLite by default, PostgreSQL in production)."""
