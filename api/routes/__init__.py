"""One module of routes per resource: rollouts, the manual actions on them, policies, operations."""
