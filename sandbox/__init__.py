"""A local Knative-like cluster for demos, tests and benchmarks; imports nothing of the product."""
