"""Conformance checkers for plugin authors (``check_domain``, ``check_regime``, ``check_backbone``) and
throwaway projects for end-to-end tests."""
