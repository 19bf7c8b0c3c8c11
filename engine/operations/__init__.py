"""Operations of the engine's own resources over HTTP: subscriptions, delivery and bots.

Modules::

    subscriptions  Subscription/SubscriptionTopic write checks, ``$explain``
    delivery       ``$status``, ``$events``, ``$resend``, dead letters, websocket binding
    bots           the Bot write check, ``$deploy``, ``$execute``, async job status
    validate       ``$validate`` (type and instance level; modes create, update, delete)
"""
