"""birthmark curation package."""
