"""vla_jax: pretraining vision-language-action robot policies in JAX.

Importing it chooses nothing: entry points call :func:`vla_jax.platform.jax_defaults` first.
"""
