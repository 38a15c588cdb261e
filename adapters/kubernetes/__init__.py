"""The Kubernetes adapter package: the client with its one write function (`api`) and Kubernetes
Events (`events`). The only code of the product that imports `kubernetes`."""
