/* The bot page (editor, save, sample input and runs, history, recording) and the execution
   page (run again). Plain browser JavaScript; text from the server is only ever set with
   textContent or as a form value, never as HTML. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function say(id, text, bad = false) {
    const el = $(id);
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", bad);
  }

  function errorOf(response) {
    const body = response.json;
    if (body && body.error) return body.error;
    if (body && body.resourceType === "OperationOutcome") {
      return (body.issue || []).map((i) => i.diagnostics || i.code).join("; ");
    }
    return `${response.status} ${response.text.slice(0, 200)}`;
  }

  const shown = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

  /* Show a run's result (from /api/bots/{id}/run or /api/executions/{id}/$rerun). */
  function showRun(ran) {
    const x = ran.execution;
    $("run-result").hidden = false;
    const status = $("run-status");
    status.textContent = x.outcome;
    status.className = `pill ${x.status}`;
    $("run-duration").textContent = `${x.duration_ms.toFixed(1)} ms · version ${ran.bot_version} · ${x.fhir_calls} FHIR calls`;
    const link = $("run-link");
    link.href = `${Fhirbots.mount()}/executions/${encodeURIComponent(x.id)}`;
    link.title = "listed a few seconds after the run, if the bot's recording keeps it";
    $("run-error-box").hidden = !x.error;
    $("run-error").textContent = x.error || "";
    $("run-output").textContent = x.output === null ? "(none)" : shown(x.output);
    $("run-logs").textContent = x.logs || "(none)";
  }

  /* ---- the bot page ---- */

  function startBot(section) {
    const api = section.dataset.api;
    const textarea = $("bot-code");
    let editor = null;
    if (window.FhirbotsEditor) {
      const host = $("bot-editor");
      host.hidden = false;
      textarea.hidden = true;
      editor = FhirbotsEditor.create(host, { doc: textarea.value, language: "python" });
    }
    const code = () => (editor ? FhirbotsEditor.getValue(editor) : textarea.value);
    const diagnostics = (problems) => {
      if (editor) FhirbotsEditor.setDiagnostics(editor, problems);
      const list = $("bot-problems");
      list.textContent = "";
      for (const p of problems) {
        const item = document.createElement("li");
        item.textContent = `line ${p.line}, column ${p.column}: ${p.message}`;
        list.appendChild(item);
      }
    };

    $("bot-save").addEventListener("click", async () => {
      say("bot-save-status", "checking…");
      const source = code();
      const checked = await Fhirbots.send("POST", `${api}/check`, { code: source });
      if (!checked.ok) return say("bot-save-status", errorOf(checked), true);
      diagnostics(checked.json.problems);
      if (!checked.json.ok) {
        const n = checked.json.problems.length;
        return say("bot-save-status", `not saved: ${n} problem${n === 1 ? "" : "s"}`, true);
      }
      if (checked.json.unchanged) {
        return say("bot-save-status", `unchanged (version ${checked.json.version})`);
      }
      const deployed = await Fhirbots.send("POST", section.dataset.deploy, { code: source });
      if (!deployed.ok) return say("bot-save-status", errorOf(deployed), true);
      const version = deployed.json.meta.versionId;
      $("bot-version").textContent = version;
      say("bot-save-status", `deployed as version ${version}`);
      loadHistory();
    });

    const sample = () => ({ content_type: $("sample-type").value, text: $("sample-text").value });
    $("sample-save").addEventListener("click", async () => {
      const saved = await Fhirbots.send("PUT", `${api}/sample`, sample());
      if (!saved.ok) return say("sample-status", errorOf(saved), true);
      $("bot-version").textContent = saved.json.version;
      say("sample-status", saved.json.unchanged ? "unchanged" : `saved (version ${saved.json.version})`);
      loadHistory();
    });
    $("sample-run").addEventListener("click", async () => {
      say("sample-status", "running…");
      const { content_type, text } = sample();
      const ran = await Fhirbots.send("POST", `${api}/run`, { content_type, input: text });
      if (!ran.ok) return say("sample-status", errorOf(ran), true);
      say("sample-status", "");
      showRun(ran.json);
    });

    $("recording-save").addEventListener("click", async () => {
      const saved = await Fhirbots.send("PUT", `${api}/recording`, { execution_recording: $("recording").value });
      if (!saved.ok) return say("recording-status", errorOf(saved), true);
      $("bot-version").textContent = saved.json.version;
      say("recording-status", saved.json.unchanged ? "unchanged" : `saved (version ${saved.json.version})`);
      loadHistory();
    });

    let diff = null;
    async function loadHistory() {
      const body = $("history-rows");
      let listed;
      try {
        listed = await Fhirbots.getJSON(`${api}/history`);
      } catch (e) {
        body.textContent = "";
        return say("history-status", `could not load the history: ${e.message}`, true);
      }
      body.textContent = "";
      listed.versions.forEach((v, i) => {
        const row = document.createElement("tr");
        const radio = (name, checked) => {
          const cell = document.createElement("td");
          const input = document.createElement("input");
          Object.assign(input, { type: "radio", name, value: v.version, checked });
          input.setAttribute("aria-label", `${name === "old" ? "old" : "new"} version ${v.version}`);
          cell.appendChild(input);
          return cell;
        };
        row.appendChild(radio("old", i === 1));
        row.appendChild(radio("new", i === 0));
        for (const [text, cls] of [[v.version, "num"], [v.last_updated.slice(0, 19).replace("T", " "), ""],
          [v.deleted ? "deleted" : v.code_changed ? `code (${v.lines} lines)` : "settings", ""]]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          if (cls) cell.className = cls;
          row.appendChild(cell);
        }
        const action = document.createElement("td");
        if (!v.deleted && !v.code_is_current) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "secondary";
          button.textContent = "roll back to this version";
          button.addEventListener("click", () => rollBack(v.version));
          action.appendChild(button);
        }
        row.appendChild(action);
        body.appendChild(row);
      });
    }

    async function rollBack(version) {
      if (!window.confirm(`Store the code of version ${version} as a new version?`)) return;
      const done = await Fhirbots.send("POST", `${api}/rollback`, { version });
      if (!done.ok) return say("history-status", errorOf(done), true);
      if (done.json.unchanged) return say("history-status", "that is the current code: unchanged");
      window.location.reload();
    }

    $("history-compare").addEventListener("click", async () => {
      const pick = (name) => (document.querySelector(`input[name=${name}]:checked`) || {}).value;
      const a = pick("old"), b = pick("new");
      if (!a || !b) return say("history-status", "pick an old and a new version", true);
      try {
        const [older, newer] = await Promise.all([a, b].map((v) => Fhirbots.getJSON(`${api}/history/${v}`)));
        const host = $("diff");
        if (diff) diff.destroy();
        host.textContent = "";
        host.hidden = false;
        diff = FhirbotsEditor.mergeView(host, older.code, newer.code, { language: "python" });
        say("history-status", `version ${a} → version ${b}`);
      } catch (e) {
        say("history-status", `could not compare: ${e.message}`, true);
      }
    });

    loadHistory();
  }

  /* ---- the execution page ---- */

  function startExecution(section) {
    $("rerun").addEventListener("click", async () => {
      say("rerun-status", "running…");
      const ran = await Fhirbots.send("POST", section.dataset.rerun);
      if (!ran.ok) return say("rerun-status", errorOf(ran), true);
      say("rerun-status", "");
      showRun(ran.json);
    });
  }

  /* This file loads before app.js (the page's head block comes first), so it waits for the
     document, by when app.js has defined Fhirbots. */
  document.addEventListener("DOMContentLoaded", () => {
    const bot = $("bot");
    if (bot) startBot(bot);
    const execution = $("execution");
    if (execution) startExecution(execution);
  });
})();
