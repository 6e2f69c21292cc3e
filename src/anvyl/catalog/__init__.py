"""The model catalog: GGUF import, the bundled model, and discovery of MLX model directories."""
