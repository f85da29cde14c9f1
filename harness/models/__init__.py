"""Floor 4, names -> headers and files: the registry (models.toml), models shipped on PyPI, the
Hugging Face Hub (header-only reads, verified downloads), and a MODEL argument resolved. Beside the
engine floor (harness.llama); neither imports the other."""
