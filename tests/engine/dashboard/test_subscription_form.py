"""The new-subscription form: a valid Subscription created and audited, refusals shown beside
their fields; the resource built from the form and issues placed by the element they name."""

from __future__ import annotations

import re

from fhirbots.engine.dashboard.subscription_form import SECRET_URL, build_subscription, field_of
from fhirbots.subscriptions.definitions import FHIRPATH_CRITERIA_URL, INTERACTION_URL
from tests.engine.scenarios.dashboard import Browser, audit_events, key_author


async def test_the_form_creates_a_valid_subscription(browser: Browser) -> None:
    form = await browser.page("/dashboard/subscriptions/new")
    assert 'name="criteria"' in form and 'name="fhirpath"' in form and 'name="secret"' in form
    response = await browser.client.post(
        "/dashboard/subscriptions/new",
        data=[
            ("csrf", browser.csrf),
            ("reason", "female patients"),
            ("status", "active"),
            ("criteria", "Patient?gender=female"),
            ("fhirpath", "%previous.id.empty()"),
            ("interactions", "create"),
            ("interactions", "delete"),
            ("channel_type", "rest-hook"),
            ("endpoint", "https://example.org/hook"),
            ("headers", "Authorization: Bearer abc\r\n\r\nX-Team: ops"),
            ("secret", "hmac-key"),
            ("payload", "application/fhir+json"),
            ("content", "id-only"),
        ],
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    match = re.search(r"/dashboard/subscriptions/([^?]+)\?done=created$", location)
    assert match is not None
    stored = await browser.engine.fhir.read("p1", "Subscription", match.group(1))
    resource = stored.content
    assert resource is not None
    assert (
        resource["criteria"] == "Patient?gender=female" and resource["reason"] == "female patients"
    )
    assert resource["channel"]["header"] == ["Authorization: Bearer abc", "X-Team: ops"]
    assert resource["channel"]["_payload"]["extension"][0]["valueCode"] == "id-only"
    extensions = {
        (e["url"], next(v for k, v in e.items() if k != "url")) for e in resource["extension"]
    }
    assert extensions == {
        (FHIRPATH_CRITERIA_URL, "%previous.id.empty()"),
        (SECRET_URL, "hmac-key"),
        (INTERACTION_URL, "create"),
        (INTERACTION_URL, "delete"),
    }
    assert "Subscription created" in await browser.page(location)
    (audit,) = await audit_events(browser, "subscription-create")
    assert audit["agent"][0]["who"]["reference"] == await key_author(browser)


async def test_an_invalid_criterion_is_shown_beside_its_field_and_creates_nothing(
    browser: Browser,
) -> None:
    fields = {
        "criteria": "Patient?no-such-parameter=1",
        "endpoint": "https://example.org/hook",
        "interactions": "create",
    }
    response = await browser.post("/dashboard/subscriptions/new", fields)
    page = await response.text()
    assert response.status == 422
    found = re.search(
        r'id="f-criteria"[^>]*>\s*<div class="field-error" id="error-criteria"[^>]*>([^<]+)<', page
    )
    assert found is not None, page
    assert "no-such-parameter" in found.group(1)
    assert 'id="form-problems"' not in page
    assert 'value="Patient?no-such-parameter=1"' in page  # what was typed is kept
    bad_fhirpath = await browser.post(
        "/dashboard/subscriptions/new",
        {**fields, "criteria": "Patient?gender=female", "fhirpath": "name.where("},
    )
    assert bad_fhirpath.status == 422
    assert 'id="error-fhirpath"' in await bad_fhirpath.text()
    several = await browser.post("/dashboard/subscriptions/new", {"criteria": "Patient?x=1"})
    text = await several.text()  # no endpoint, no interaction and a bad criterion: all shown
    for name in ("endpoint", "interactions", "criteria"):
        assert f'id="error-{name}"' in text, name
    assert await browser.engine.storage.current_resources("p1", "Subscription") == []


def test_the_default_interactions_need_no_extension() -> None:
    resource, fields, errors = build_subscription(
        {
            "criteria": "Patient?gender=female",
            "interactions": ["update", "create"],
            "channel_type": "websocket",
        }
    )
    assert errors == {} and fields == {} and "extension" not in resource
    assert resource["channel"] == {"type": "websocket"}
    assert resource["status"] == "active" and resource["reason"]


def test_issues_are_placed_by_the_element_they_name() -> None:
    extension_fields = {0: "fhirpath", 1: "secret"}
    assert field_of("Subscription.criteria", extension_fields) == "criteria"
    assert field_of("Subscription.criteria.extension[0]", extension_fields) == "criteria"
    assert field_of("Subscription.channel.endpoint", extension_fields) == "endpoint"
    assert field_of("Subscription.channel.header[1]", extension_fields) == "headers"
    assert field_of("Subscription.extension[1].valueString", extension_fields) == "secret"
    assert (
        field_of("Subscription.extension(fhir-path-criteria-expression): bad", extension_fields)
        == "fhirpath"
    )
    assert field_of("Subscription.criteriaX", extension_fields) is None
    assert field_of("Subscription.end", extension_fields) is None
