"""Parameter and checkpoint conversion between vla_jax and other projects' formats (docs/interop.md)."""
