"""tokenmill's on-disk contract, a leaf that needs only pyarrow: Arrow schemas of shards and
rejects (`shards`), every object name under an output (`layout`), the typed ledger entry, run
summary and verify report (`records`), and the report SQL (`sql`)."""
