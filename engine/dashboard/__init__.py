"""The operations dashboard, served by the engine at ``/dashboard``.

Modules::

    app        the sub-application: sessions or keys, CSRF, error pages, static files
    context    what a handler gets: the engine's parts and the caller
    sessions   sign-in with an API key, server-side sessions, CSRF tokens
    audit      AuditEvents of actions taken from the dashboard
    pages      sign-in, sign-out, project switching; every view's routes
    overview   the charts of the last hour or day, ``/api/stats``
    subscriptions  the Subscriptions table, one Subscription and its actions, the new form

Templates are in ``templates/`` (Jinja2), scripts and styles in ``static/`` with the vendored
libraries in ``static/vendor/``. See ``docs/dashboard.md``.
"""
