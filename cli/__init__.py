"""The `autocanary` command: one module per command group (`policy`, `rollout`, `api`, `worker`,
`scheduler`, `replay`), composed in `cli.main` with the sandbox's own `sandbox` and `demo`.
The product never imports it; it imports whatever its commands run."""
