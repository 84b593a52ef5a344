"""Data only: the bundled .tiktoken files (see HASHES.md); a package so setuptools ships it."""
