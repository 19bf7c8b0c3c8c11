"""fhirbots engine package."""
