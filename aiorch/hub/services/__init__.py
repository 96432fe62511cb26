"""Service layer: domain logic between the API routers and the store."""
