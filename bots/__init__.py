"""fhirbots bots package."""
