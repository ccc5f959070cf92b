"""gRPC stubs of distgat.v1, generated from proto/ by clients/python/generate.sh."""
