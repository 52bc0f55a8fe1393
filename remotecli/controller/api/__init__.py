"""The HTTP API wing: the FastAPI app, its dependencies, schemas, OpenAPI errors and routers."""
