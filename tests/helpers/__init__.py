"""What tests share and that is not a test: plugin stacks, throwaway plugins, the attacker, folder runs.

Imported as `helpers.<module>` (pytest puts `tests/` on the path through its root conftest).
"""
