"""Built-in domains; importing this package registers them (folder name == registry key == params key)."""

from domains import dermatology, ehr, nlp, vision, xray  # noqa: F401
