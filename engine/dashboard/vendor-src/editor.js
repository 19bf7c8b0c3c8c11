/*
 * Entry point of the dashboard's editor bundle (built by build.sh into
 * ../static/vendor/editor.min.js, one minified IIFE with no imports).
 *
 * It exposes one global, window.FhirbotsEditor, and nothing else:
 *
 *   FhirbotsEditor.create(parent, {doc, language, readOnly, onChange}) -> view
 *       Mounts an editor in the element `parent` and returns its
 *       CodeMirror EditorView (call view.destroy() to remove it).
 *       doc       initial text (default "")
 *       language  "python" (default) or "json"
 *       readOnly  true to forbid edits (selection, copy and search still work)
 *       onChange  function (text, view), called after each change of the text
 *
 *   FhirbotsEditor.getValue(view) -> string
 *   FhirbotsEditor.setValue(view, text)
 *       Read or replace the whole text (setValue calls onChange too).
 *
 *   FhirbotsEditor.setDiagnostics(view, diagnostics)
 *       Replaces the markers shown in the text and the gutter; [] clears
 *       them. Each diagnostic is {line, column, endLine, endColumn, message,
 *       severity}: line and column count from 1 (as Python and most linters
 *       report them); column absent: the whole line is marked; endLine and
 *       endColumn absent: up to the end of the line. Positions out of the text
 *       are clamped to it. severity is "error" (default), "warning", "info" or
 *       "hint".
 *
 *   FhirbotsEditor.mergeView(parent, a, b, {language, unified, collapseUnchanged}) -> handle
 *       A read-only diff of the texts a (old) and b (new). Side by side by
 *       default (a on the left); unified: true shows one column with the
 *       deleted lines of a inline. collapseUnchanged (default true) folds long
 *       runs of unchanged lines. The handle has destroy().
 *
 *   FhirbotsEditor.versions
 *       The versions of the bundled CodeMirror packages, filled in by build.sh.
 */
import { basicSetup } from "codemirror";
import { EditorView, keymap } from "@codemirror/view";
import { EditorState } from "@codemirror/state";
import { indentWithTab } from "@codemirror/commands";
import { indentUnit } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { json } from "@codemirror/lang-json";
import { lintGutter, setDiagnostics as cmSetDiagnostics } from "@codemirror/lint";
import { MergeView, unifiedMergeView } from "@codemirror/merge";

const SEVERITIES = new Set(["error", "warning", "info", "hint"]);

function languageExtensions(language) {
  if (language === undefined || language === "python") {
    return [python(), indentUnit.of("    ")];
  }
  if (language === "json") {
    return [json(), indentUnit.of("  ")];
  }
  throw new Error(`FhirbotsEditor: unknown language ${JSON.stringify(language)} (python or json)`);
}

function baseExtensions(language, readOnly) {
  const extensions = [basicSetup, languageExtensions(language)];
  if (readOnly) {
    extensions.push(EditorState.readOnly.of(true));
  } else {
    extensions.push(keymap.of([indentWithTab]));
  }
  return extensions;
}

function create(parent, options = {}) {
  const { doc = "", language = "python", readOnly = false, onChange } = options;
  const extensions = [baseExtensions(language, readOnly), lintGutter()];
  if (typeof onChange === "function") {
    extensions.push(
      EditorView.updateListener.of((update) => {
        if (update.docChanged) onChange(update.state.doc.toString(), update.view);
      }),
    );
  }
  return new EditorView({
    parent,
    state: EditorState.create({ doc: String(doc), extensions }),
  });
}

function getValue(view) {
  return view.state.doc.toString();
}

function setValue(view, text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: String(text) } });
}

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

function lineAt(doc, number) {
  const n = Number.isFinite(number) ? Math.trunc(number) : 1;
  return doc.line(clamp(n, 1, doc.lines));
}

function toCodeMirror(doc, d) {
  const first = lineAt(doc, d.line);
  let from = first.from;
  let to = first.to;
  if (Number.isFinite(d.column)) {
    from = first.from + clamp(Math.trunc(d.column) - 1, 0, first.length);
    if (d.endLine !== undefined || d.endColumn !== undefined) {
      const last = d.endLine !== undefined ? lineAt(doc, d.endLine) : first;
      to = Number.isFinite(d.endColumn)
        ? last.from + clamp(Math.trunc(d.endColumn) - 1, 0, last.length)
        : last.to;
    }
  } else if (d.endLine !== undefined) {
    to = lineAt(doc, d.endLine).to;
  }
  if (to < from) to = from;
  const severity = SEVERITIES.has(d.severity) ? d.severity : "error";
  return { from, to, severity, message: String(d.message ?? "") };
}

function setDiagnostics(view, diagnostics) {
  const doc = view.state.doc;
  const list = (diagnostics || []).map((d) => toCodeMirror(doc, d));
  view.dispatch(cmSetDiagnostics(view.state, list));
}

function mergeView(parent, a, b, options = {}) {
  const { language = "python", unified = false, collapseUnchanged = true } = options;
  const collapse = collapseUnchanged ? { margin: 3, minSize: 6 } : undefined;
  const extensions = baseExtensions(language, true);
  if (unified) {
    return new EditorView({
      parent,
      state: EditorState.create({
        doc: String(b),
        extensions: [
          extensions,
          unifiedMergeView({
            original: String(a),
            mergeControls: false,
            gutter: true,
            collapseUnchanged: collapse,
          }),
        ],
      }),
    });
  }
  return new MergeView({
    parent,
    a: { doc: String(a), extensions },
    b: { doc: String(b), extensions },
    gutter: true,
    collapseUnchanged: collapse,
  });
}

/* global __CODEMIRROR_VERSIONS__ */
const versions = Object.freeze(
  typeof __CODEMIRROR_VERSIONS__ === "object" ? __CODEMIRROR_VERSIONS__ : {},
);

window.FhirbotsEditor = Object.freeze({
  create,
  getValue,
  setValue,
  setDiagnostics,
  mergeView,
  versions,
});
