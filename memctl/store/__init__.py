"""The encrypted index database (SQLCipher 4): connection, schema migrations, records, vectors."""
