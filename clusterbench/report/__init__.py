"""`python -m clusterbench report SWEEP_DIR... [--out DIR]`: a finished sweep as the paper's
tables (Markdown, CSV) and figures (PNG), with every missing or unreadable run listed."""
