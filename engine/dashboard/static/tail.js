/* The live tail: reads /dashboard/api/tail (Server-Sent Events, one JSON object per event)
   and lists the events newest on top. Rows are built with textContent only: every value comes
   from user data. */
"use strict";

(() => {
  const MAX_ROWS = 500;
  const SAMPLED_SHOWN_MS = 3000;

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    if (value !== undefined && value !== null) el.textContent = String(value);
    if (cls) el.className = cls;
    return el;
  }

  function link(href, label) {
    const a = text("a", label);
    a.href = href;
    return a;
  }

  function describe(e) {
    const resource = e.resource_type ? `${e.resource_type}/${e.resource_id || "?"}` : "";
    switch (e.kind) {
      case "change":
        return [resource, `${e.interaction} v${e.version}${e.author ? " by " + e.author : ""}`];
      case "notification":
        return [`Subscription/${e.subscription}`, `${resource} → ${e.endpoint || e.channel}`];
      case "delivery":
        return [`Subscription/${e.subscription}`,
          `attempt ${e.attempt} to ${e.endpoint || e.channel}` +
          `${e.status ? " · HTTP " + e.status : ""} · ${Math.round(e.duration_ms)} ms` +
          `${e.error ? " · " + e.error : ""}`];
      case "execution":
        return [e.bot, `${e.trigger} · ${Math.round(e.duration_ms)} ms${e.error ? " · " + e.error : ""}`];
      default:
        return [resource, ""];
    }
  }

  function row(e) {
    const tr = document.createElement("tr");
    tr.className = `kind-${e.kind}`;
    tr.appendChild(text("td", new Date(e.time).toLocaleTimeString(), "mono"));
    tr.appendChild(text("td", e.kind));
    const [what, detail] = describe(e);
    tr.appendChild(text("td", what, "mono"));
    tr.appendChild(text("td", detail));
    const outcome = text("td");
    if (e.outcome) outcome.appendChild(text("span", e.outcome, `pill ${e.outcome}`));
    tr.appendChild(outcome);
    const links = text("td");
    if (e.links) {
      links.appendChild(link(e.links.record, "record"));
      links.appendChild(document.createTextNode(" · "));
      links.appendChild(link(e.links.trace, "trace"));
    }
    tr.appendChild(links);
    return tr;
  }

  function start() {
    const table = document.getElementById("tail");
    if (!table) return;
    const body = document.getElementById("tail-rows");
    const status = document.getElementById("tail-status");
    const count = document.getElementById("tail-count");
    const pausedNote = document.getElementById("tail-paused");
    const sampled = document.getElementById("tail-sampled");
    const pause = document.getElementById("tail-pause");
    const form = document.getElementById("tail-filters");
    document.getElementById("tail-max").textContent = String(MAX_ROWS);

    let received = 0;
    let paused = false;
    let held = [];
    let heldCount = 0;
    let sampledTimer = null;

    const add = (events) => {
      const fragment = document.createDocumentFragment();
      for (const e of events.slice(-MAX_ROWS).reverse()) fragment.appendChild(row(e));
      body.insertBefore(fragment, body.firstChild);
      while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    };

    const showCount = () => {
      count.textContent = received.toLocaleString();
      pausedNote.textContent = paused ? ` (paused: ${heldCount.toLocaleString()} since)` : "";
    };

    /* The form's checkboxes become one kinds=a,b parameter, as the API takes it. */
    form.addEventListener("submit", () => {
      const kinds = [...form.querySelectorAll("input[name=kind]:checked")].map((i) => i.value);
      form.querySelector("input[name=kinds]").value = kinds.join(",");
      for (const box of form.querySelectorAll("input[name=kind]")) box.disabled = true;
      for (const input of form.querySelectorAll("input, select")) {
        if (!input.value) input.disabled = true;
      }
    });

    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) { add(held); held = []; heldCount = 0; }
      showCount();
    });
    document.getElementById("tail-clear").addEventListener("click", () => {
      body.textContent = ""; held = []; heldCount = 0; received = 0; showCount();
    });

    const query = new URLSearchParams(window.location.search);
    query.delete("kind");
    const source = new EventSource(`${table.dataset.stream}?${query.toString()}`);
    source.onopen = () => { status.textContent = "live"; };
    source.onerror = () => { status.textContent = "reconnecting…"; };
    source.onmessage = (message) => {
      const e = JSON.parse(message.data);
      if (e.kind === "ready") { status.textContent = `live · project ${e.project}`; return; }
      if (e.kind === "sampled") {
        sampled.hidden = false;
        sampled.textContent = `More than ${e.max_per_second} events/s match: showing ${e.shown} of ${e.matched}` +
          (e.ratio ? ` (about 1 in ${e.ratio}).` : ".") + " Narrow the filters to see every one.";
        clearTimeout(sampledTimer);
        sampledTimer = setTimeout(() => { sampled.hidden = true; }, SAMPLED_SHOWN_MS);
        return;
      }
      received += 1;
      if (paused) {
        held.push(e);
        heldCount += 1;
        if (held.length > MAX_ROWS) held.shift();
      } else {
        add([e]);
      }
      showCount();
    };
    window.addEventListener("beforeunload", () => source.close());
  }

  /* Deferred scripts run in document order, this one before app.js: start once all ran. */
  document.addEventListener("DOMContentLoaded", start);
})();
