"""fhirbots subscriptions package."""
