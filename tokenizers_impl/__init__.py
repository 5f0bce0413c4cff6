"""tokenmill: tokenizers_impl."""
