"""Parameters and multiply-adds: per-layer counts, closed forms, cross-checks, tables, figures."""
