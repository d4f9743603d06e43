"""Request and response schemas, one module per area (they also generate the OpenAPI document)."""
