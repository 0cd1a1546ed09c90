"""Data: label preprocessing, ICPE, dataset readers and the built-in synthetic scenes."""
