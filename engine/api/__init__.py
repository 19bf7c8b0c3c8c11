"""The FHIR R4 REST API (aiohttp) at ``/fhir/R4/``."""
