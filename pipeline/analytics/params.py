"""Report parameters every layer of the analytics (and the command line) shares; no imports, so
reading a default does not load DuckDB."""

DEFAULT_ALPHA = 2.5  # the Renyi efficiency order reports use unless told
MAX_ALPHA = 16.0  # sum(n ** alpha) over token counts stays finite in doubles up to alpha = 16
