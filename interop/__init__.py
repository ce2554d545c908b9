"""Interop tooling: the Go grid peer (see README.md)."""
