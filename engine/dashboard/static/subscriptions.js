/* Subscriptions views: ask before an action in a dialog (the server asks on a page of its own
   when this script does not run), select dead letters, hints on the new-subscription form.
   It runs before app.js is loaded, so it waits for DOMContentLoaded (after every deferred
   script) rather than pushing onto Fhirbots.onLoad. */
"use strict";

(() => {
  /* A form (or the button that submitted it) with data-confirm: ask, then post with
     confirm=yes so the server does not ask again. */
  function confirmBeforeSubmit(event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    const button = event.submitter;
    const question = (button && button.dataset.confirm) || form.dataset.confirm;
    if (!question) return;
    if (form.id === "dead-letters-form" && !document.querySelector('input[form="dead-letters-form"]:checked')) {
      event.preventDefault();
      window.alert("Select dead letters first.");
      return;
    }
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    let flag = form.querySelector('input[name="confirm"]');
    if (!flag) {
      flag = document.createElement("input");
      flag.type = "hidden";
      flag.name = "confirm";
      form.appendChild(flag);
    }
    flag.value = "yes";
  }

  function selectAll() {
    const all = document.getElementById("select-all-dead");
    if (!all) return;
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll('input[type=checkbox][form="dead-letters-form"]')) {
        box.checked = all.checked;
      }
    });
  }

  function endpointHint() {
    const type = document.getElementById("f-channel-type");
    const hint = document.getElementById("endpoint-hint");
    if (!type || !hint) return;
    const hints = {
      "rest-hook": "a URL, or Bot/<id>",
      websocket: "none needed: clients bind with $get-ws-binding-token",
      message: "an event-log topic name, not starting with fhir.",
    };
    const update = () => { hint.textContent = hints[type.value] || ""; };
    type.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("submit", confirmBeforeSubmit);
    selectAll();
    endpointHint();
  });
})();
