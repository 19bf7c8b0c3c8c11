"""FHIR subscriptions: search semantics and the subscription matcher.

* :mod:`subscriptions.search` - FHIR search semantics shared by the datastore and the matcher;
* :mod:`subscriptions.definitions` - Subscription / SubscriptionTopic resources parsed (and
  validated) into :mod:`subscriptions.model` objects;
* :mod:`subscriptions.evaluation`, :mod:`subscriptions.index`, :mod:`subscriptions.matching` -
  does a subscription fire for a change event, which ones can, and the notifications;
* :mod:`subscriptions.explain`, :mod:`subscriptions.loop_guard`, :mod:`subscriptions.config`.

Everything here is pure: no I/O. The stage runner is :mod:`engine.stages.matcher`.
"""
