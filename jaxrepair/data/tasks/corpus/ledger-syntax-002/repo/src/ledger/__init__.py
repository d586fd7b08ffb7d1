"""ledger: a tiny double-entry ledger."""
