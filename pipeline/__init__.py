"""tokenmill's engine, in three subsystems that never import one another, over what they share:

- `pipeline.tokenize`: where a document enters (`inputs/`), becomes tokens and is committed
  (`unit.py`), on Ray actors (`engine.py`, `actors.py`);
- `pipeline.loader`: where a trainer reads committed tokens back (torch and Ray Train);
- `pipeline.analytics`: where committed outputs are measured with DuckDB SQL;
- shared: `pipeline.output` (storage, ledger, shard files, lease, verify, repair) and
  `pipeline.errors`; the on-disk contract is the `schemas` package."""
