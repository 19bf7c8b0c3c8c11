"""The public surface of :mod:`fhirbots.engine.delivery`."""

from __future__ import annotations

import fhirbots.engine.delivery as delivery


def test_exports_exist_and_are_the_documented_ones() -> None:
    assert sorted(delivery.__all__) == delivery.__all__
    for name in delivery.__all__:
        assert getattr(delivery, name) is not None, name
    assert {"DeliveryStore", "BotInvoker", "DeliveryError"} <= set(delivery.__all__)
    assert issubclass(delivery.EndpointRefused, delivery.DeliveryError)
    assert issubclass(delivery.DeliveryStoreError, delivery.DeliveryError)
