"""tokenmill: pipeline."""
