"""vla_jax: pretraining vision-language-action robot policies in JAX."""
