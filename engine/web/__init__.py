"""HTTP plumbing shared by the API and the operations: request context, media types, API keys.

Modules::

    context   what a handler gets from its request: the engine's services, the caller
    http      JSON bodies, FHIR media types, headers, the base URL of a request
    auth      API keys: generated once, stored hashed, each scoped to a project
"""
