"""fhirbots schemas package."""
