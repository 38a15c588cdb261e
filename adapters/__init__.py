"""The adapters: one module per backend behind the ports of `rollouts.ports` (Kubernetes and the
targets and routers on it), and the factory that picks them per rollout by its target's kind."""
