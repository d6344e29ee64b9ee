"""What the server exposes: the V2 REST and gRPC routes, the fast infer path, admin routes and draining."""
