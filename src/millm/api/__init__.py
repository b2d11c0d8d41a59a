"""HTTP and WebSocket layer: routes, the error mapper and request-scoped access to the Runtime."""
