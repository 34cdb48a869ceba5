"""File safety: atomic writes (temp file, fsync, ``os.replace``) and safe loaders / archive extraction."""
