"""Training and batch jobs: the spec (`kind: Job`), their states, and the queue that places
them on the same GPUs as deployments. Pure: the hub's services feed it from the store."""
