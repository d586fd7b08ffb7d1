"""inventory: warehouse stock keeping."""
