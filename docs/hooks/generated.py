"""MkDocs hook: pages generated from the code and the committed data (filled in by the reference work)."""
