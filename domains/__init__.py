"""Built-in domains, one package each (folder name == registry key == params key). They register through
the ``transferlab.domains`` entry points in ``pyproject.toml``, like any other package's domains."""
