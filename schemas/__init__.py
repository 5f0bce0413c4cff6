"""tokenmill's versioned data model: Arrow schemas of shards and rejects, ledger layout, report SQL."""
