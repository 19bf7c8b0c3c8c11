/* The dashboard's own script: charts on the overview, the live tail, small helpers.
   Plain browser JavaScript, no build step; uPlot, htmx and the editor are vendored. */
"use strict";

const Fhirbots = (() => {
  const mount = () => document.body.dataset.mount || "/dashboard";
  const csrf = () => document.body.dataset.csrf || "";

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  async function send(method, url, body, contentType = "application/json") {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = contentType;
    const response = await fetch(url, {
      method, credentials: "same-origin", headers,
      body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
    });
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    return { ok: response.ok, status: response.status, json, text };
  }

  const PALETTE = ["#1f6feb", "#1a7f37", "#cf222e", "#9a6700", "#8250df", "#0a7ea4", "#bf3989", "#57606a"];

  /* One chart: series = {name: {t: value}}, xs = every step of the range. */
  function chart(el, xs, series, { yLabel = "", rate = true, step = 10 } = {}) {
    if (!el) return;
    const names = Object.keys(series).sort();
    const data = [xs];
    for (const name of names) {
      data.push(xs.map((t) => {
        const v = series[name][t];
        if (v === undefined) return rate ? 0 : null;
        return rate ? v / step : v;
      }));
    }
    if (names.length === 0) { data.push(xs.map(() => 0)); names.push("(none)"); }
    const opts = {
      width: Math.max(el.clientWidth, 300), height: 200,
      scales: { x: { time: true } },
      axes: [{}, { label: yLabel, size: 50 }],
      series: [{}, ...names.map((name, i) => ({
        label: name, stroke: PALETTE[i % PALETTE.length], width: 1.5,
        /* A measurement (a duration, a lag) is missing where nothing was measured: one alone
           between gaps has no line to draw, so sparse measurements are drawn as dots too. */
        points: {
          show: !rate && data[i + 1].filter((v) => v !== null).length < 60,
          size: 6, fill: PALETTE[i % PALETTE.length],
        },
      }))],
    };
    if (el._plot) el._plot.destroy();
    el.textContent = "";
    el._plot = new uPlot(opts, data, el);
  }

  function grouped(points, label) {
    const out = {};
    for (const p of points) {
      const name = label(p);
      (out[name] ||= {})[p.t] = ((out[name] || {})[p.t] || 0) + p.count;
    }
    return out;
  }

  function setKpi(id, text) {
    const el = document.querySelector(`#${id} .n`);
    if (el) el.textContent = text;
  }

  async function drawOverview(section) {
    const stats = await getJSON(section.dataset.stats);
    const step = stats.step_seconds;
    const since = Date.parse(stats.since) / 1000;
    const until = Date.parse(stats.until) / 1000;
    const xs = [];
    for (let t = since; t < until; t += step) xs.push(t);
    const m = stats.metrics;
    const total = (metric, pred = () => true) => m[metric].totals.filter(pred).reduce((a, t) => a + t.count, 0);
    setKpi("kpi-changes", total("changes").toLocaleString());
    setKpi("kpi-notifications", total("notifications").toLocaleString());
    setKpi("kpi-deliveries-failed", total("deliveries", (t) => t.dims[1] !== "success").toLocaleString());
    const runs = total("executions");
    const failed = total("executions", (t) => !["success", "skipped"].includes(t.dims[1]));
    setKpi("kpi-executions", runs.toLocaleString());
    setKpi("kpi-errors", runs ? `${((100 * failed) / runs).toFixed(1)}%` : "–");
    chart(document.getElementById("chart-changes"), xs, grouped(m.changes.points, (p) => p.dims.join(" ")), { yLabel: "/s", step });
    chart(document.getElementById("chart-notifications"), xs, grouped(m.notifications.points, () => "notifications"), { yLabel: "/s", step });
    chart(document.getElementById("chart-deliveries"), xs, grouped(m.deliveries.points, (p) => p.dims[1]), { yLabel: "/s", step });
    chart(document.getElementById("chart-executions"), xs, grouped(m.executions.points, (p) => p.dims[1]), { yLabel: "/s", step });
    const p50 = {}, p99 = {};
    for (const p of m.executions.points) {
      if (p.p50_ms !== null) { p50[p.t] = Math.max(p50[p.t] || 0, p.p50_ms); p99[p.t] = Math.max(p99[p.t] || 0, p.p99_ms); }
    }
    chart(document.getElementById("chart-durations"), xs, { p50: p50, p99: p99 }, { yLabel: "ms", rate: false, step });
    if (stats.lag) {
      const events = {}, seconds = {};
      for (const s of stats.lag) {
        (events[s.group] ||= {})[s.t] = s.events;
        (seconds[s.group] ||= {})[s.t] = s.seconds;
      }
      const lagXs = [...new Set(stats.lag.map((s) => s.t))].sort((a, b) => a - b);
      chart(document.getElementById("chart-lag-events"), lagXs.length ? lagXs : xs, events, { yLabel: "events", rate: false, step });
      chart(document.getElementById("chart-lag-seconds"), lagXs.length ? lagXs : xs, seconds, { yLabel: "s", rate: false, step });
    }
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function startOverview() {
    const section = document.getElementById("overview");
    if (!section) return;
    const draw = () => drawOverview(section).catch((e) => {
      const updated = document.getElementById("updated");
      if (updated) updated.textContent = `could not load the figures: ${e.message}`;
    });
    draw();
    setInterval(draw, 10000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    startOverview();
    for (const init of Fhirbots.onLoad) init();
  });

  return { mount, csrf, getJSON, send, chart, onLoad: [] };
})();
