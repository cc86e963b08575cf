"""birthmark models package."""
