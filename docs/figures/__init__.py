"""The book's figure scripts: each draws one figure from the library itself (see book.FIGURES)."""
