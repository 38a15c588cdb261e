"""What people and pipelines touch: the HTTP API, its Python client and the `autocanary` CLI."""
