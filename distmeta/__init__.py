"""distmeta."""
