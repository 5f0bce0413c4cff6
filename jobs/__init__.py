"""tokenmill: jobs."""
