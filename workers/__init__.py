"""birthmark workers package."""
