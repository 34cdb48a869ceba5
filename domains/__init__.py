"""Built-in domains; importing this package registers them (folder name == registry key == params key)."""

from domains import nlp, vision  # noqa: F401
