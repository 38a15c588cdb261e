// The dashboard: pages drawn from the API's own routes with fetch, streams and SVG; no framework.
// Everything that comes from users or from the cluster is written with textContent, never as HTML.

import { drawChart } from "./chart.js";

const main = document.getElementById("main");
const PHASES = ["pending", "initializing", "progressing", "paused", "promoting", "rolling_back",
  "succeeded", "rolled_back", "aborted", "superseded", "failed"];
const TERMINAL = new Set(["succeeded", "rolled_back", "aborted", "superseded", "failed"]);
const ACTIONS = [
  { verb: "abort", label: "Abort", says: "Stable goes back to 100 % within a second; the rollout ends aborted." },
  { verb: "pause", label: "Pause", says: "The canary stays at its weight; failures still roll back." },
  { verb: "resume", label: "Resume", says: "The rollout continues where it was paused." },
  { verb: "promote", label: "Promote now", says: "The remaining steps are skipped and the canary gets 100 %." },
];
const MANUAL = new Set(["abort", "pause", "resume", "promote"]);

let session = null; // {name, role, csrf}: who is signed in (the token itself is never kept)
let leavePage = () => {}; // stops the current page's timers and streams
let shown = 0; // which page is on screen: a page that finished loading after another was opened stops at once

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text.slice(0, 200) }; }
  if (!response.ok) throw new HttpError(response.status, data);
  return data;
}

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") element.className = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function phase(name) {
  return el("span", { className: `phase phase-${name}` }, name.replace("_", " "));
}

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.floor(seconds % 60)}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function evidence(value) {
  if (value === null || value === undefined) return "n/a";
  return value >= 100 && value < 1e6 ? Math.round(value).toLocaleString("en") : Number(value.toPrecision(3)).toString();
}

function show(...children) {
  main.replaceChildren(...children.flat());
  main.focus({ preventScroll: true });
}

function showWho() {
  document.getElementById("who").textContent = session ? `${session.name} (${session.role})` : "";
  document.getElementById("sign-out").hidden = !session;
}

/** What a failed request means, as a page: sign in again, not allowed, not found, or unavailable. */
function failure(error) {
  if (error instanceof HttpError && error.status === 401) {
    session = null;
    showWho();
    return signInPage("Your session has ended: sign in again.");
  }
  if (error instanceof HttpError && error.status === 403) {
    return show(el("h1", {}, "Not allowed"), el("p", {}, error.message));
  }
  if (error instanceof HttpError && error.status === 404) {
    return show(el("h1", {}, "Not found"), el("p", {}, error.message), el("a", { href: "/ui", "data-nav": true }, "All rollouts"));
  }
  const what = error instanceof HttpError ? `The API answered ${error.status}: ${error.message}` : `The API cannot be reached: ${error.message}`;
  return show(el("h1", {}, "Unavailable"), el("p", { className: "error", role: "alert" }, what));
}

// --- sign in ----------------------------------------------------------------------------------

function signInPage(notice = "") {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = el("p", { className: "error", role: "alert" }, notice);
  const form = el("form", { className: "signin" },
    el("label", { for: "token" }, "Token"), input, el("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      session = await api("/ui/session", { method: "POST", body: { token: input.value } });
    } catch (problem) {
      input.value = "";
      error.textContent = problem instanceof HttpError && problem.status === 401
        ? "That token is not known to this installation." : `Sign-in failed: ${problem.message}`;
      return;
    }
    input.value = "";
    showWho();
    route();
  });
  show(el("h1", {}, "Sign in"),
    el("p", { className: "muted" }, "Use the same token as the API and the CLI. It is exchanged for a session cookie and not kept by the browser."),
    form);
  input.focus();
}

// --- rollouts -----------------------------------------------------------------------------------

function rolloutsPage() {
  const params = new URLSearchParams(location.search);
  const field = (name, label, control) => el("label", {}, label, control);
  const namespace = el("input", { name: "namespace", value: params.get("namespace") || "", size: 14 });
  const service = el("input", { name: "service", value: params.get("service") || "", size: 14 });
  const phaseSelect = el("select", { name: "phase" }, el("option", { value: "" }, "any"),
    PHASES.map((p) => el("option", { value: p, selected: params.get("phase") === p }, p.replace("_", " "))));
  const kind = el("select", { name: "kind" }, el("option", { value: "" }, "any"),
    ["knative", "istio", "gateway-api"].map((k) => el("option", { value: k, selected: params.get("kind") === k }, k)));
  const filters = el("form", { className: "filters", role: "search" },
    field("namespace", "Namespace", namespace), field("service", "Service", service),
    field("phase", "Phase", phaseSelect), field("kind", "Target kind", kind), el("button", { type: "submit" }, "Filter"));
  const body = el("tbody");
  const status = el("p", { className: "muted", "aria-live": "polite" });
  const newer = el("button", { type: "button", disabled: true }, "Newer");
  const older = el("button", { type: "button", disabled: true }, "Older");
  const cursors = [null];
  let next = null;

  const query = () => {
    const q = new URLSearchParams({ limit: "25" });
    for (const [name, control] of [["namespace", namespace], ["service", service], ["phase", phaseSelect], ["kind", kind]]) {
      if (control.value) q.set(name, control.value);
    }
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    return q;
  };
  const load = async () => {
    let page;
    try { page = await api(`/v1/rollouts?${query()}`); } catch (error) { return failure(error); }
    next = page.next_cursor;
    newer.disabled = cursors.length === 1;
    older.disabled = !next;
    body.replaceChildren(...page.items.map((r) => el("tr", {},
      el("td", {}, phase(r.phase)),
      el("td", {}, el("a", { href: `/ui/rollouts/${encodeURIComponent(r.id)}`, "data-nav": true }, `${r.namespace}/${r.service}`),
        el("div", { className: "muted" }, `${r.stable_revision} → ${r.canary_revision}`)),
      el("td", { className: "optional" }, r.target.kind),
      el("td", {}, r.step ? `${r.step}/${r.steps}` : `0/${r.steps}`),
      el("td", {}, `${r.canary_weight} % canary`),
      el("td", { className: "sentence" }, r.reason || ""),
      el("td", { className: "optional" }, el("time", { datetime: r.created_at }, age(r.created_at))))));
    status.textContent = page.items.length ? `Live: refreshed ${new Date().toLocaleTimeString()}` : "No rollout matches.";
  };
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    cursors.splice(1);
    const shown = new URLSearchParams(query());
    shown.delete("limit");
    history.replaceState(null, "", `/ui${shown.toString() ? `?${shown}` : ""}`);
    load();
  });
  older.addEventListener("click", () => { if (next) { cursors.push(next); load(); } });
  newer.addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load(); } });

  const headings = ["Phase", "Rollout", "Kind", "Step", "Weight", "Latest", "Age"];
  const table = el("table", {}, el("thead", {}, el("tr", {}, headings.map((h, i) =>
    el("th", { scope: "col", className: i === 2 || i === 6 ? "optional" : null }, h)))), body);
  show(el("h1", {}, "Rollouts"), filters, status, el("div", { className: "table-wrap" }, table),
    el("div", { className: "pager" }, newer, older));
  load();
  const timer = setInterval(load, 3000);
  leavePage = () => clearInterval(timer);
}

// --- one rollout --------------------------------------------------------------------------------

function describeStep(step) {
  if (typeof step === "number") return `${step} %`;
  const match = step.match || {};
  return `match: ${Object.keys(match).join(", ")}`;
}

function facts(pairs) {
  return el("dl", { className: "facts" }, pairs.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function policyFacts(policy) {
  const value = (v) => (Array.isArray(v) ? v.map((s) => (typeof s === "object" ? JSON.stringify(s) : String(s))).join(", ")
    : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  return facts(Object.entries(policy).filter(([key]) => key !== "description").map(([key, v]) => [key, value(v)]));
}

/** Server-Sent Events over fetch: resumes after the last event id when the connection drops. */
function follow(path, onEvent, onEnd) {
  const stop = new AbortController();
  let last = null;
  (async () => {
    while (!stop.signal.aborted) {
      try {
        const headers = { Accept: "text/event-stream" };
        if (last) headers["Last-Event-ID"] = last;
        const response = await fetch(path, { headers, credentials: "same-origin", signal: stop.signal });
        if (!response.ok) throw new HttpError(response.status, await response.json().catch(() => null));
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          // Lines end in CRLF, LF or CR (the spec allows all three); a CR that ends a chunk waits for the next.
          buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const fields = { event: "message", data: "", id: null };
            for (const line of frame.split("\n")) {
              const colon = line.indexOf(":");
              if (colon <= 0) continue;
              const [name, text] = [line.slice(0, colon), line.slice(colon + 1).replace(/^ /, "")];
              if (name === "data") fields.data += text;
              else if (name in fields) fields[name] = text;
            }
            if (fields.id) last = fields.id;
            if (fields.event === "end") { onEnd(); return; }
            if (fields.data) onEvent(JSON.parse(fields.data));
          }
        }
      } catch (error) {
        if (stop.signal.aborted) return;
        if (error instanceof HttpError && (error.status === 401 || error.status === 404)) { failure(error); return; }
      }
      await new Promise((resolve) => setTimeout(resolve, 2000)); // then resume after `last`
    }
  })();
  return () => stop.abort();
}

function rolloutPage(id) {
  const heading = el("h1", {}, `Rollout ${id}`);
  const summary = el("div");
  const steps = el("ol", { className: "steps", "aria-label": "Steps" });
  const actions = el("div", { className: "actions" });
  const result = el("div", { "aria-live": "polite" });
  const chart = el("div", { className: "chart" });
  const verdicts = el("ul", { className: "log", "aria-label": "Verdicts" });
  const log = el("ul", { className: "log", "aria-label": "Event log" });
  const manual = el("ul", { className: "log", "aria-label": "Actions by hand" });
  const policy = el("div");
  const streamState = el("p", { className: "muted", "aria-live": "polite" }, "Connecting to the event stream…");
  const points = [];
  let rollout = null;
  let refreshing = null;

  const render = () => {
    heading.replaceChildren(`${rollout.namespace}/${rollout.service} `, phase(rollout.phase));
    summary.replaceChildren(facts([
      ["Target", `${rollout.target.kind} ${rollout.target.namespace}/${rollout.target.name}`],
      ["Stable", `${rollout.stable_revision}: ${rollout.stable_weight} %`],
      ["Canary", `${rollout.canary_revision}: ${rollout.canary_weight} %`],
      ...(rollout.target.canary_url ? [["Try the canary", `${rollout.target.canary_url} (tag ${rollout.target.tag})`]] : []),
      ["Step", `${rollout.step}/${rollout.steps}${rollout.time_in_step_seconds !== null ? `, ${Math.round(rollout.time_in_step_seconds)}s in it` : ""}`],
      ["Phase", `${rollout.phase.replace("_", " ")}: ${rollout.phase_doc}`],
      ["Now", rollout.reason || "-"],
      ["Evidence against", `${evidence(rollout.evidence)} (rolled back at ${evidence(rollout.evidence_threshold)})`],
      ["Evidence no worse", rollout.no_worse_threshold === null ? "fixed steps"
        : `${evidence(rollout.no_worse_evidence)} (a step may end early at ${evidence(rollout.no_worse_threshold)})`],
      ["Policy", rollout.policy],
      ["Labels", Object.entries(rollout.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"],
      ["Registered", new Date(rollout.created_at).toLocaleString()],
    ]));
    if (rollout.resolved_policy) {
      const current = rollout.step - 1;
      steps.replaceChildren(...rollout.resolved_policy.steps.map((step, index) => el("li", {
        className: TERMINAL.has(rollout.phase) ? (rollout.phase === "succeeded" ? "done" : "")
          : index < current ? "done" : index === current ? "current" : "",
        "aria-current": index === current && !TERMINAL.has(rollout.phase) ? "step" : null,
      }, `${index + 1}. ${describeStep(step)}`)), el("li", { className: rollout.phase === "succeeded" ? "done" : "" }, "100 %"));
      policy.replaceChildren(policyFacts(rollout.resolved_policy));
    }
    const allowed = session.role === "operator" && !TERMINAL.has(rollout.phase);
    actions.replaceChildren(...(allowed ? ACTIONS.map((a) => el("button", {
      type: "button", className: a.verb === "abort" ? "danger" : null, onclick: () => act(a),
    }, a.label)) : []));
    drawChart(chart, points, { rollback: rollout.evidence_threshold, noWorse: rollout.no_worse_threshold });
  };

  // A refresh that was asked for (or answered) after this page was left must not replace the
  // page on screen: a 401 from before a sign-in would show "session ended" to the new session.
  const refresh = async () => {
    if (page !== shown) return;
    try { rollout = await api(`/v1/rollouts/${encodeURIComponent(id)}`); } catch (error) { return page === shown ? failure(error) : undefined; }
    if (page === shown) render();
  };
  const soon = () => { refreshing = refreshing || setTimeout(() => { refreshing = null; refresh(); }, 500); };

  const act = (action) => {
    const dialog = document.getElementById("confirm");
    const reason = document.getElementById("confirm-reason");
    document.getElementById("confirm-title").textContent = `${action.label}: ${rollout.namespace}/${rollout.service}`;
    document.getElementById("confirm-text").textContent = action.says;
    document.getElementById("confirm-ok").textContent = action.label;
    reason.value = "";
    const form = document.getElementById("confirm-form");
    const cancel = document.getElementById("confirm-cancel");
    const close = () => { form.onsubmit = null; cancel.onclick = null; dialog.close(); };
    cancel.onclick = close;
    form.onsubmit = async (event) => {
      event.preventDefault();
      const why = reason.value.trim();
      if (!why) { reason.focus(); return; }
      close();
      try {
        const accepted = await api(`/v1/rollouts/${encodeURIComponent(id)}/${action.verb}`, { method: "POST", body: { reason: why } });
        result.replaceChildren(el("p", { className: "result" },
          `${action.label} accepted (202) from ${accepted.actor} while the rollout was ${accepted.phase.replace("_", " ")}; the event log shows the outcome.`));
      } catch (error) {
        const refused = error instanceof HttpError && error.status === 409
          ? `${action.label} refused (409): ${error.message}` : `${action.label} failed: ${error.message}`;
        result.replaceChildren(el("p", { className: "result refused", role: "alert" }, refused));
      }
      soon();
    };
    dialog.showModal();
    reason.focus();
  };

  const onEvent = (event) => {
    const when = el("time", { datetime: event.at }, new Date(event.at).toLocaleTimeString());
    log.prepend(el("li", {}, when, el("span", { className: "kind" }, event.kind),
      event.actor ? `${event.actor}: ` : "", event.message));
    if (event.kind === "verdict") {
      verdicts.prepend(el("li", {}, el("time", { datetime: event.at }, new Date(event.at).toLocaleTimeString()),
        el("span", { className: "kind" }, event.data.outcome || ""), event.message));
      // Each test's evidence (every latency boundary apart); verdicts logged before that carry checks only.
      const tests = { ...(event.data.tests || {}) };
      if (!event.data.tests) for (const check of event.data.checks || []) if (check.evidence !== null && check.evidence !== undefined) tests[check.name] = check.evidence;
      points.push({ t: Date.parse(event.at), weight: event.data.canary_weight ?? 0, tests, noWorse: event.data.no_worse_evidence });
    }
    if (MANUAL.has(event.kind)) {
      manual.prepend(el("li", {}, el("time", { datetime: event.at }, new Date(event.at).toLocaleString()),
        el("span", { className: "kind" }, event.kind), `by ${event.actor}: ${event.message || "(no reason given)"}`));
    }
    streamState.textContent = `Live: last event ${new Date(event.at).toLocaleTimeString()}`;
    soon();
  };

  show(heading, summary, el("h2", {}, "Steps"), steps, actions, result,
    el("h2", {}, "Evidence over time"), chart,
    el("div", { className: "grid2" },
      el("section", {}, el("h2", {}, "Verdicts"), verdicts),
      el("section", {}, el("h2", {}, "Event log"), streamState, log)),
    el("h2", {}, "By hand"), manual,
    el("h2", {}, "Policy as resolved"), policy);
  const page = shown;
  refresh().then(() => {
    if (page !== shown) return; // the user went elsewhere meanwhile
    const stop = follow(`/v1/rollouts/${encodeURIComponent(id)}/events`, onEvent, () => {
      streamState.textContent = "The rollout has ended; the log is complete.";
      soon();
    });
    const timer = setInterval(() => { if (rollout && !TERMINAL.has(rollout.phase)) refresh(); }, 5000);
    leavePage = () => { stop(); clearInterval(timer); };
  });
}

// --- policies -----------------------------------------------------------------------------------

async function policiesPage() {
  show(el("h1", {}, "Policies"), el("p", {}, "Loading…"));
  let policies;
  try { policies = await api("/v1/policies"); } catch (error) { return failure(error); }
  show(el("h1", {}, "Policies"),
    el("p", { className: "muted" }, "The built-in policies and this installation's own, resolved."),
    Object.entries(policies).map(([name, p]) => el("section", {}, el("h2", {}, name),
      el("p", {}, p.description || ""), policyFacts(p))));
}

// --- routing ------------------------------------------------------------------------------------

function route() {
  leavePage();
  leavePage = () => {};
  shown += 1;
  if (!session) return signInPage();
  const path = location.pathname.replace(/\/+$/, "");
  const one = path.match(/^\/ui\/rollouts\/([A-Za-z0-9_-]{1,64})$/);
  if (path === "/ui") return rolloutsPage();
  if (one) return rolloutPage(one[1]);
  if (path === "/ui/policies") return policiesPage();
  return show(el("h1", {}, "Not found"), el("a", { href: "/ui", "data-nav": true }, "All rollouts"));
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  history.pushState(null, "", link.getAttribute("href"));
  route();
});
window.addEventListener("popstate", route);
document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("/ui/session", { method: "DELETE" }); } catch { /* signed out either way */ }
  session = null;
  showWho();
  route();
});

(async () => {
  try {
    session = await api("/ui/session");
  } catch (error) {
    if (!(error instanceof HttpError && error.status === 401)) return failure(error);
  }
  showWho();
  route();
})();
