"""Shared library: config, errors, logging, server factory, backends, documents."""
