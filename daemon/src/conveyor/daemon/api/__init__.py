"""The gRPC API: grpcio's thread pool bridged into the trio loop."""
