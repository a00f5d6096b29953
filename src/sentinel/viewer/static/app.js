/* Sentinel trace viewer (SPEC §9): a single page over the same-origin Jaeger query API.
 *
 * Plain ES2020, no framework, no build step, nothing fetched from anywhere but this server.
 * Routes:  /  and  /search?service=..&operation=..&tags={json}&minDuration=..&maxDuration=..
 *                       &lookback=1h|..|custom&start=<µs>&end=<µs>&limit=20   (shareable searches)
 *          /trace/<traceID>[?span=<spanID>]                                   (one trace; back button works)
 * All times from the API are microseconds since the Unix epoch.
 */
"use strict";

(function () {
  // ---------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);

  /** Create an element: el("div", {class: "x", dataset: {a: 1}, onclick: f}, child, "text", ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key === "style") node.style.cssText = value;
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else if (value === true) node.setAttribute(key, "");
        else node.setAttribute(key, String(value));
      }
    }
    for (const child of children) append(node, child);
    return node;
  }

  function append(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  const LOOKBACKS = { "15m": 15 * 60e6, "1h": 3600e6, "6h": 6 * 3600e6, "24h": 24 * 3600e6 };
  const DURATION_RE = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
  const TRACE_ID_RE = /^[0-9a-f]{1,32}$/;

  function formatDuration(us) {
    if (!Number.isFinite(us)) return "–";
    if (us < 1) return "0µs";
    if (us < 1000) return `${Math.round(us)}µs`;
    if (us < 1e6) return `${trim(us / 1000, us < 1e4 ? 2 : 1)}ms`;
    if (us < 60e6) return `${trim(us / 1e6, 2)}s`;
    const minutes = Math.floor(us / 60e6);
    if (minutes < 60) return `${minutes}m ${Math.round((us % 60e6) / 1e6)}s`;
    return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
  }

  function trim(value, digits) {
    return value.toFixed(digits).replace(/\.?0+$/, "");
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");

  function formatTime(us, withDate = true) {
    const d = new Date(us / 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
    if (!withDate) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function isoTime(us) {
    return new Date(us / 1000).toISOString();
  }

  function relativeTime(us) {
    const seconds = (Date.now() * 1000 - us) / 1e6;
    if (seconds < 0) return "in the future";
    if (seconds < 45) return "just now";
    if (seconds < 90) return "a minute ago";
    if (seconds < 3600) return `${Math.round(seconds / 60)} minutes ago`;
    if (seconds < 5400) return "an hour ago";
    if (seconds < 86400) return `${Math.round(seconds / 3600)} hours ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  function toLocalInput(us) {
    const d = new Date(us / 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
      `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fromLocalInput(value) {
    if (!value) return NaN;
    return new Date(value).getTime() * 1000;
  }

  /** A trace id from what a person pastes: a bare id, a traceparent, or a URL ending in one. */
  function normaliseTraceId(text) {
    const s = text.trim().toLowerCase();
    const traceparent = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}/.exec(s);
    if (traceparent) return traceparent[1];
    const inUrl = /\/trace\/([0-9a-f]{1,32})(?:[/?#]|$)/.exec(s);
    if (inUrl) return inUrl[1];
    return TRACE_ID_RE.test(s) ? s : null;
  }

  /** `key=value key2="a value"` → {key: "value", key2: "a value"}; throws on a malformed pair. */
  function parseTags(text) {
    const tags = {};
    const re = /\s*([^\s=]+)=("((?:[^"\\]|\\.)*)"|'([^']*)'|(\S*))/y;
    let rest = text.trim();
    while (rest) {
      re.lastIndex = 0;
      const m = re.exec(rest);
      if (!m) throw new Error(`tags: expected key=value at “${rest.split(/\s/)[0]}”`);
      const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : m[4] !== undefined ? m[4] : m[5];
      tags[m[1]] = value;
      rest = rest.slice(re.lastIndex).trim();
    }
    return tags;
  }

  function formatTags(tags) {
    return Object.entries(tags)
      .map(([k, v]) => (/^[^\s"']*$/.test(v) && v !== "" ? `${k}=${v}` : `${k}="${v.replace(/(["\\])/g, "\\$1")}"`))
      .join(" ");
  }

  // ---------------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    let response;
    try {
      response = await fetch(path, { headers: { Accept: "application/json" } });
    } catch (err) {
      throw new ApiError(0, `cannot reach the trace server (${err.message})`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    const firstError = body && Array.isArray(body.errors) && body.errors.length ? body.errors[0] : null;
    if (!response.ok) {
      const message = (firstError && (firstError.msg || firstError.message)) || text.slice(0, 300) ||
        response.statusText;
      throw new ApiError(response.status, `${response.status}: ${message}`);
    }
    if (!body || typeof body !== "object") throw new ApiError(response.status, "the server sent no JSON");
    if (firstError && !body.data) throw new ApiError(firstError.code || 500, firstError.msg || "query failed");
    return body;
  }

  // ---------------------------------------------------------------------------------------------
  // Colours: one per service, stable for a given list of services.

  const PALETTE = [
    "#2f6fb3", "#2e9461", "#c26a1d", "#8251b8", "#c23f77", "#178a99",
    "#6f8420", "#b04b36", "#4f5fd1", "#9a7620", "#3b8a7e", "#a04aa8",
  ];
  let knownServices = [];

  function serviceColor(service) {
    const index = knownServices.indexOf(service);
    if (index >= 0 && index < PALETTE.length) return PALETTE[index];
    let hash = 0;
    for (let i = 0; i < service.length; i++) hash = (hash * 31 + service.charCodeAt(i)) | 0;
    return PALETTE[Math.abs(hash) % PALETTE.length];
  }

  // ---------------------------------------------------------------------------------------------
  // Trace model: Jaeger JSON → a tree in depth-first order.

  function tagValue(tags, key) {
    if (!tags) return undefined;
    for (const tag of tags) if (tag.key === key) return tag.value;
    return undefined;
  }

  function isErrorSpan(span) {
    const error = tagValue(span.tags, "error");
    if (error === true || error === "true") return true;
    const status = tagValue(span.tags, "otel.status_code");
    return typeof status === "string" && status.toUpperCase() === "ERROR";
  }

  function analyseTrace(trace) {
    const processes = trace.processes || {};
    const spans = (trace.spans || []).slice();
    const byId = new Map();
    for (const span of spans) {
      const process = processes[span.processID] || {};
      span._service = process.serviceName || span.processID || "unknown";
      span._process = process;
      span._error = isErrorSpan(span);
      span._children = [];
      span._parent = null;
      span._parentId = null;
      byId.set(span.spanID, span);
    }
    let start = Infinity;
    let end = -Infinity;
    for (const span of spans) {
      start = Math.min(start, span.startTime);
      end = Math.max(end, span.startTime + span.duration);
      const parentRef = (span.references || []).find((r) => r.refType === "CHILD_OF") ||
        (span.references || []).find((r) => r.refType === "FOLLOWS_FROM" && r.traceID === span.traceID);
      if (parentRef && parentRef.traceID === span.traceID) span._parentId = parentRef.spanID;
      span._parentRef = parentRef || null;
      const parent = parentRef && parentRef.traceID === span.traceID ? byId.get(parentRef.spanID) : undefined;
      if (parent && parent !== span) {
        span._parent = parent;
        parent._children.push(span);
      }
    }
    if (!spans.length) start = end = 0;
    const byStart = (a, b) => a.startTime - b.startTime || a.spanID.localeCompare(b.spanID);
    for (const span of spans) span._children.sort(byStart);
    const roots = spans.filter((s) => !s._parent).sort(byStart);

    // Depth-first order, iteratively (deep chains must not blow the stack); a cycle in bad data
    // cannot loop because every span is visited once.
    const order = [];
    const visited = new Set();
    const visit = (root) => {
      const stack = [[root, 0]];
      while (stack.length) {
        const [span, depth] = stack.pop();
        if (visited.has(span)) continue;
        visited.add(span);
        span._depth = depth;
        span._index = order.length;
        order.push(span);
        for (let i = span._children.length - 1; i >= 0; i--) stack.push([span._children[i], depth + 1]);
      }
    };
    roots.forEach(visit);
    for (const span of spans.slice().sort(byStart)) if (!visited.has(span)) visit(span);
    // Subtree sizes: in depth-first order a span's descendants are the next (size - 1) spans.
    for (let i = order.length - 1; i >= 0; i--) {
      const span = order[i];
      span._size = 1;
      for (const child of span._children) if (child._index > i) span._size += child._size;
    }

    const services = new Map();
    let errors = 0;
    for (const span of spans) {
      services.set(span._service, (services.get(span._service) || 0) + 1);
      if (span._error) errors++;
    }
    const root = roots.find((s) => !s._parentId) || roots[0] || null;
    return {
      traceID: trace.traceID || (spans[0] && spans[0].traceID) || "",
      raw: trace,
      spans: order,
      byId,
      root,
      rootMissing: !!root && !!root._parentId,
      start,
      end,
      duration: end - start,
      services,
      errors,
      depth: order.reduce((m, s) => Math.max(m, s._depth + 1), 0),
    };
  }

  function traceName(model) {
    if (!model.root) return "(no spans)";
    return `${model.root._service}: ${model.root.operationName}`;
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  let navSeq = 0; // a response for an older navigation is dropped
  let lastSearchHref = "/search";
  const resultCache = new Map(); // search URL → traces, so "back" to a search is instant

  function navigate(href, replace = false) {
    const url = new URL(href, location.origin);
    if (url.href !== location.href) {
      if (replace) history.replaceState(null, "", url);
      else history.pushState(null, "", url);
    }
    route();
  }

  function route() {
    navSeq++;
    hideBanner();
    const path = location.pathname.replace(/\/+$/, "") || "/";
    const traceMatch = /^\/trace\/([^/]+)$/.exec(path);
    if (traceMatch) {
      showView("trace");
      const id = decodeURIComponent(traceMatch[1]);
      const span = new URLSearchParams(location.search).get("span");
      loadTrace(id, span, navSeq);
      return;
    }
    showView("search");
    lastSearchHref = location.pathname + location.search;
    const params = new URLSearchParams(location.search);
    applyParamsToForm(params);
    if (params.get("service")) runSearch(params, navSeq);
    else renderSearchPrompt();
  }

  function showView(name) {
    const trace = name === "trace";
    $("trace-view").hidden = !trace;
    $("search-view").hidden = trace;
    $("sidebar").hidden = trace;
    document.body.classList.toggle("trace-mode", trace);
    if (!trace) document.title = "Search · Sentinel traces";
  }

  /** Links inside the page are routed here instead of reloading it (ctrl/middle click still opens a tab). */
  function onLinkClick(event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey ||
      event.altKey) return;
    const link = event.target.closest("a[data-nav]");
    if (!link) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  }

  // ---------------------------------------------------------------------------------------------
  // Banner (API and network errors)

  function showBanner(message) {
    $("banner-text").textContent = message;
    $("banner").hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Search form

  let operationsSeq = 0;
  let servicesLoaded = null;

  function loadServices() {
    servicesLoaded = api("/api/services").then(
      (body) => {
        const services = (body.data || []).slice().sort();
        knownServices = services;
        fillServiceSelect(services);
        return services;
      },
      (err) => {
        fillServiceSelect([]);
        showBanner(`Could not load services: ${err.message}`);
        return [];
      },
    );
    return servicesLoaded;
  }

  function fillServiceSelect(services) {
    const select = $("f-service");
    const fromUrl = select.dataset.wanted || "";
    const remembered = storage("sentinel.service");
    const value = fromUrl || (services.includes(remembered) ? remembered : services[0] || "");
    select.replaceChildren();
    if (!services.length) {
      select.append(el("option", { value: "", text: "No services yet" }));
    } else {
      select.append(el("option", { value: "", text: "Choose a service…", disabled: true }));
      for (const s of services) select.append(el("option", { value: s, text: s }));
    }
    if (value && !services.includes(value)) select.append(el("option", { value, text: value }));
    select.value = value;
    loadOperations(value, $("f-operation").dataset.wanted || "");
  }

  /** localStorage, which may be unavailable (privacy settings): then nothing is remembered. */
  function storage(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key) || "";
      localStorage.setItem(key, value);
    } catch (_) {
      // not remembered
    }
    return "";
  }

  function loadOperations(service, wanted) {
    const select = $("f-operation");
    const seq = ++operationsSeq;
    select.replaceChildren(el("option", { value: "", text: "All operations" }));
    if (wanted) select.append(el("option", { value: wanted, text: wanted }));
    select.value = wanted || "";
    if (!service) return Promise.resolve();
    select.dataset.loading = "1";
    return api(`/api/services/${encodeURIComponent(service)}/operations`).then(
      (body) => {
        if (seq !== operationsSeq) return;
        const operations = (body.data || []).map((o) => (typeof o === "string" ? o : o.name)).filter(Boolean);
        operations.sort();
        select.replaceChildren(el("option", { value: "", text: "All operations" }));
        for (const o of operations) select.append(el("option", { value: o, text: o }));
        if (wanted && !operations.includes(wanted)) select.append(el("option", { value: wanted, text: wanted }));
        select.value = wanted || "";
        delete select.dataset.loading;
      },
      (err) => {
        if (seq !== operationsSeq) return;
        delete select.dataset.loading;
        showBanner(`Could not load operations of ${service}: ${err.message}`);
      },
    );
  }

  function applyParamsToForm(params) {
    const service = params.get("service") || "";
    const operation = params.get("operation") || "";
    const serviceSelect = $("f-service");
    serviceSelect.dataset.wanted = service;
    $("f-operation").dataset.wanted = operation;
    if (service) {
      if (![...serviceSelect.options].some((o) => o.value === service)) {
        serviceSelect.append(el("option", { value: service, text: service }));
      }
      if (serviceSelect.value !== service || $("f-operation").value !== operation) {
        serviceSelect.value = service;
        loadOperations(service, operation);
      }
    }
    let tags = {};
    try {
      tags = params.get("tags") ? JSON.parse(params.get("tags")) : {};
      if (!tags || typeof tags !== "object" || Array.isArray(tags)) tags = {};
    } catch (_) {
      tags = {};
    }
    tags = Object.fromEntries(Object.entries(tags).map(([k, v]) => [k, String(v)]));
    const errorsOnly = tags.error === "true";
    if (errorsOnly) delete tags.error;
    $("f-errors").checked = errorsOnly;
    $("f-tags").value = formatTags(tags);
    $("f-min").value = params.get("minDuration") || "";
    $("f-max").value = params.get("maxDuration") || "";
    $("f-limit").value = params.get("limit") || "20";
    const lookback = params.get("lookback") || (params.get("start") ? "custom" : "1h");
    $("f-lookback").value = lookback in LOOKBACKS || lookback === "custom" ? lookback : "1h";
    if ($("f-lookback").value === "custom") {
      const start = Number(params.get("start"));
      const end = Number(params.get("end"));
      $("f-start").value = start ? toLocalInput(start) : "";
      $("f-end").value = end ? toLocalInput(end) : "";
    }
    $("custom-range").hidden = $("f-lookback").value !== "custom";
    setFormError("");
  }

  function setFormError(message) {
    $("form-error").textContent = message;
    $("form-error").hidden = !message;
  }

  /** The form → the /search URL's parameters, or an error message. */
  function formToParams() {
    const params = new URLSearchParams();
    const service = $("f-service").value;
    if (!service) throw new Error("Choose a service.");
    params.set("service", service);
    if ($("f-operation").value) params.set("operation", $("f-operation").value);
    const tags = parseTags($("f-tags").value);
    if ($("f-errors").checked) tags.error = "true";
    if (Object.keys(tags).length) params.set("tags", JSON.stringify(tags));
    for (const [id, name] of [["f-min", "minDuration"], ["f-max", "maxDuration"]]) {
      const value = $(id).value.trim().replace(/\s+/g, "");
      if (!value) continue;
      if (!DURATION_RE.test(value)) throw new Error(`${name}: use a duration like 250ms, 1.5s or 2m.`);
      params.set(name, value);
    }
    const lookback = $("f-lookback").value;
    params.set("lookback", lookback);
    if (lookback === "custom") {
      const start = fromLocalInput($("f-start").value);
      const end = $("f-end").value ? fromLocalInput($("f-end").value) : Date.now() * 1000;
      if (!Number.isFinite(start)) throw new Error("Custom range: set the start time.");
      if (!(end > start)) throw new Error("Custom range: the end must be after the start.");
      params.set("start", String(Math.floor(start)));
      params.set("end", String(Math.floor(end)));
    }
    const limit = Number($("f-limit").value || 20);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1500) throw new Error("Limit: a whole number from 1 to 1500.");
    params.set("limit", String(limit));
    return params;
  }

  function onSearchSubmit(event) {
    event.preventDefault();
    let params;
    try {
      params = formToParams();
    } catch (err) {
      setFormError(err.message);
      return;
    }
    setFormError("");
    storage("sentinel.service", params.get("service"));
    const href = `/search?${params}`;
    resultCache.delete(href); // an explicit search always asks the server again
    navigate(href); // the same search twice does not add a history entry but still runs again
  }

  /** The API query for a search URL: a relative lookback becomes an absolute start/end now. */
  function apiQuery(params) {
    const query = new URLSearchParams();
    for (const key of ["service", "operation", "tags", "minDuration", "maxDuration", "limit"]) {
      if (params.get(key)) query.set(key, params.get(key));
    }
    const lookback = params.get("lookback") || "1h";
    const now = Date.now() * 1000;
    let start = Number(params.get("start"));
    let end = Number(params.get("end")) || now;
    if (lookback !== "custom" || !start) {
      end = now;
      start = end - (LOOKBACKS[lookback] || LOOKBACKS["1h"]);
    }
    query.set("start", String(Math.floor(start)));
    query.set("end", String(Math.floor(end)));
    if (!query.get("limit")) query.set("limit", "20");
    return query;
  }

  // ---------------------------------------------------------------------------------------------
  // Search results

  let currentResults = [];

  function renderSearchPrompt() {
    $("results-bar").hidden = true;
    currentResults = [];
    const results = $("results");
    const content = el("div", { class: "empty", "data-testid": "search-prompt" });
    servicesLoaded.then((services) => {
      if (!services.length) {
        content.replaceChildren(
          el("h3", { text: "No traces received yet" }),
          el("p", { text: "Point an OpenTelemetry exporter at this server's OTLP ports " +
            "(gRPC 4317 or HTTP 4318 by default); services appear here as soon as their spans arrive." }),
        );
      } else {
        content.replaceChildren(
          el("h3", { text: "Find traces" }),
          el("p", { text: "Choose a service and press “Find traces”, or paste a trace ID at the top." }),
        );
      }
    });
    results.replaceChildren(content);
  }

  async function runSearch(params, seq) {
    const href = `/search?${params}`;
    const results = $("results");
    $("search-submit").disabled = true;
    const cached = resultCache.get(href);
    if (cached) {
      renderResults(cached, params);
      $("search-submit").disabled = false;
      return;
    }
    results.setAttribute("aria-busy", "true");
    results.replaceChildren(el("div", { class: "loading", "data-testid": "results-loading", text: "Searching…" }));
    $("results-bar").hidden = true;
    try {
      const body = await api(`/api/traces?${apiQuery(params)}`);
      if (seq !== navSeq) return;
      const traces = (body.data || []).map(analyseTrace);
      resultCache.set(href, traces);
      if (resultCache.size > 20) resultCache.delete(resultCache.keys().next().value);
      renderResults(traces, params);
    } catch (err) {
      if (seq !== navSeq) return;
      results.replaceChildren(el("div", { class: "empty error", "data-testid": "results-error" },
        el("h3", { text: "The search failed" }), el("p", { text: err.message })));
      showBanner(`Search failed: ${err.message}`);
    } finally {
      if (seq === navSeq) {
        $("search-submit").disabled = false;
        results.removeAttribute("aria-busy");
      }
    }
  }

  const SORTS = {
    recent: (a, b) => b.start - a.start,
    longest: (a, b) => b.duration - a.duration,
    shortest: (a, b) => a.duration - b.duration,
    spans: (a, b) => b.spans.length - a.spans.length,
    errors: (a, b) => b.errors - a.errors || b.start - a.start,
  };

  function renderResults(traces, params) {
    currentResults = traces;
    const results = $("results");
    $("results-bar").hidden = false;
    const limit = Number(params.get("limit") || 20);
    $("results-count").textContent = `${traces.length} trace${traces.length === 1 ? "" : "s"}` +
      (traces.length >= limit ? ` (the limit; narrow the search or raise the limit to see more)` : "");
    if (!traces.length) {
      results.replaceChildren(el("div", { class: "empty", "data-testid": "results-empty" },
        el("h3", { text: "No traces found" }),
        el("p", { text: "Try a longer time range, fewer tags, or another operation." })));
      return;
    }
    const sorted = traces.slice().sort(SORTS[$("results-sort").value] || SORTS.recent);
    const maxDuration = Math.max(...traces.map((t) => t.duration), 1);
    const list = el("ol", { class: "result-list", "data-testid": "result-list" });
    const fragment = document.createDocumentFragment();
    for (const model of sorted) fragment.append(resultItem(model, maxDuration));
    list.append(fragment);
    results.replaceChildren(list);
  }

  function resultItem(model, maxDuration) {
    const services = [...model.services.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const href = `/trace/${model.traceID}`;
    return el("li", { class: "result" + (model.errors ? " has-error" : ""), "data-testid": "result-item",
      dataset: { traceId: model.traceID } },
      el("a", { class: "result-link", href, "data-nav": true, "data-testid": "result-link" },
        el("div", { class: "result-head" },
          el("span", { class: "swatch", style: `background:${model.root ? serviceColor(model.root._service) : "#999"}` }),
          el("span", { class: "result-name", "data-testid": "result-name", text: traceName(model) }),
          model.rootMissing ? el("span", { class: "badge muted", text: "root span missing",
            title: "The root span of this trace has not been received" }) : null,
          el("span", { class: "result-id mono", text: model.traceID.slice(0, 7) }),
          el("span", { class: "result-duration", "data-testid": "result-duration", text: formatDuration(model.duration) }),
        ),
        el("div", { class: "result-bar-track" },
          el("div", { class: "result-bar", style: `width:${Math.max(0.5, (model.duration / maxDuration) * 100)}%` })),
        el("div", { class: "result-meta" },
          el("span", { class: "badge", "data-testid": "result-spans",
            text: `${model.spans.length} span${model.spans.length === 1 ? "" : "s"}` }),
          model.errors ? el("span", { class: "badge error", "data-testid": "result-error",
            text: `${model.errors} error${model.errors === 1 ? "" : "s"}` }) : null,
          el("span", { class: "result-services", "data-testid": "result-services" },
            services.map(([name, count]) => el("span", { class: "service-chip", dataset: { service: name } },
              el("span", { class: "swatch", style: `background:${serviceColor(name)}` }),
              `${name} (${count})`))),
          el("span", { class: "result-start", "data-testid": "result-start", title: isoTime(model.start) },
            formatTime(model.start), el("span", { class: "muted", text: ` · ${relativeTime(model.start)}` })),
        ),
      ),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Trace view

  let currentTrace = null;
  let downloadUrl = null;
  const traceExists = new Map(); // trace id → Promise<boolean>, for links to other traces

  async function loadTrace(rawId, spanId, seq) {
    const view = $("trace-view");
    const id = normaliseTraceId(rawId);
    if (!id) {
      renderTraceNotFound(rawId, "This is not a trace ID (up to 32 hexadecimal digits).");
      return;
    }
    const fullId = id.padStart(32, "0");
    if (currentTrace && view.dataset.traceId === fullId) {
      const back = view.querySelector("[data-testid=back-to-search]");
      if (back) back.setAttribute("href", lastSearchHref);
      document.title = `${traceName(currentTrace)} · Sentinel traces`;
      if (spanId) revealSpan(spanId, true);
      return;
    }
    currentTrace = null;
    view.dataset.traceId = "";
    view.setAttribute("aria-busy", "true");
    view.replaceChildren(backLink(), el("div", { class: "loading", "data-testid": "trace-loading",
      text: `Loading trace ${fullId}…` }));
    document.title = `Trace ${fullId.slice(0, 7)} · Sentinel traces`;
    try {
      const body = await api(`/api/traces/${fullId}`);
      if (seq !== navSeq) return;
      const trace = (body.data || [])[0];
      if (!trace || !(trace.spans || []).length) {
        renderTraceNotFound(fullId);
        return;
      }
      traceExists.set(fullId, Promise.resolve(true));
      currentTrace = analyseTrace(trace);
      currentTrace.traceID = currentTrace.traceID || fullId;
      renderTrace(currentTrace);
      view.dataset.traceId = fullId;
      document.title = `${traceName(currentTrace)} · Sentinel traces`;
      if (spanId) revealSpan(spanId, true);
    } catch (err) {
      if (seq !== navSeq) return;
      if (err.status === 404) renderTraceNotFound(fullId);
      else {
        view.replaceChildren(backLink(), el("div", { class: "empty error", "data-testid": "trace-error" },
          el("h3", { text: "Could not load the trace" }), el("p", { text: err.message })));
        showBanner(`Could not load trace ${fullId}: ${err.message}`);
      }
    } finally {
      if (seq === navSeq) view.removeAttribute("aria-busy");
    }
  }

  function backLink() {
    return el("a", { class: "back-link", href: lastSearchHref, "data-nav": true, "data-testid": "back-to-search",
      text: "← Back to search" });
  }

  function renderTraceNotFound(id, reason) {
    const view = $("trace-view");
    view.replaceChildren(backLink(), el("div", { class: "empty", "data-testid": "trace-not-found" },
      el("h3", { text: "Trace not found" }),
      el("p", {}, reason || ["No trace with ID ", el("code", { text: id }),
        " is stored here. It may not have been sampled, may not have been exported yet, " +
        "or may have been removed by the retention limit."])));
    document.title = "Trace not found · Sentinel traces";
  }

  function renderTrace(model) {
    const view = $("trace-view");
    const services = [...model.services.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    const json = new Blob([JSON.stringify({ data: [model.raw] }, (k, v) => (k.startsWith("_") ? undefined : v), 2)],
      { type: "application/json" });
    const header = el("div", { class: "trace-header", "data-testid": "trace-header" },
      el("div", { class: "trace-title-row" },
        el("h1", { class: "trace-title", "data-testid": "trace-title" },
          model.root ? el("span", { class: "swatch big", style: `background:${serviceColor(model.root._service)}` }) : null,
          traceName(model)),
        model.errors ? el("span", { class: "badge error", "data-testid": "trace-errors",
          text: `${model.errors} error${model.errors === 1 ? "" : "s"}` }) : null,
        el("a", { class: "button-link", href: (downloadUrl = URL.createObjectURL(json)), download: `trace-${model.traceID}.json`,
          "data-testid": "trace-download", text: "Download JSON" }),
      ),
      el("dl", { class: "trace-facts" },
        fact("Trace ID", el("code", { "data-testid": "trace-id", text: model.traceID })),
        fact("Start", el("span", { "data-testid": "trace-start", title: isoTime(model.start),
          text: formatTime(model.start) })),
        fact("Duration", el("span", { "data-testid": "trace-duration", text: formatDuration(model.duration) })),
        fact("Spans", el("span", { "data-testid": "trace-span-count", text: String(model.spans.length) })),
        fact("Depth", el("span", { "data-testid": "trace-depth", text: String(model.depth) })),
        fact("Services", el("span", { class: "trace-services", "data-testid": "trace-services" },
          services.map(([name, count]) => el("span", { class: "service-chip", dataset: { service: name } },
            el("span", { class: "swatch", style: `background:${serviceColor(name)}` }), `${name} (${count})`)))),
      ),
    );

    const tools = el("div", { class: "waterfall-tools" },
      el("input", { type: "search", class: "trace-filter", placeholder: "Find in trace (name, service, tag value)",
        "data-testid": "trace-filter", "aria-label": "Find in trace", oninput: (e) => filterSpans(e.target.value) }),
      el("span", { class: "muted", id: "filter-count", "data-testid": "trace-filter-count" }),
      el("button", { type: "button", "data-testid": "expand-all", onclick: () => setAllCollapsed(false),
        text: "Expand all" }),
      el("button", { type: "button", "data-testid": "collapse-all", onclick: () => setAllCollapsed(true),
        text: "Collapse all" }),
    );

    view.replaceChildren(backLink(), header, tools, renderWaterfall(model));
  }

  function fact(label, value) {
    return el("div", { class: "fact" }, el("dt", { text: label }), el("dd", {}, value));
  }

  // The waterfall. Each span is an item holding its row and, once opened, its details. Rows are built
  // into one fragment; `content-visibility` keeps layout cheap for traces with thousands of spans.

  const NAME_INDENT = 14;
  const MAX_INDENT_DEPTH = 24;

  function renderWaterfall(model) {
    const ticks = el("div", { class: "wf-ticks" });
    for (let i = 0; i <= 4; i++) {
      ticks.append(el("span", { class: "wf-tick", style: `left:${i * 25}%`,
        text: i ? formatDuration((model.duration * i) / 4) : "0" }));
    }
    const head = el("div", { class: "wf-head" },
      el("div", { class: "wf-name-col", text: "Service & operation" }),
      el("div", { class: "wf-time-col" }, ticks));
    const body = el("div", { class: "wf-body", "data-testid": "waterfall-rows", role: "tree" });
    const fragment = document.createDocumentFragment();
    const total = model.duration || 1;
    for (const span of model.spans) fragment.append(spanItem(span, model, total));
    body.append(fragment);
    body.addEventListener("click", onWaterfallClick);
    body.addEventListener("keydown", onWaterfallKey);
    return el("div", { class: "waterfall", "data-testid": "waterfall" }, head, body);
  }

  function spanItem(span, model, total) {
    const color = serviceColor(span._service);
    const left = ((span.startTime - model.start) / total) * 100;
    const width = (span.duration / total) * 100;
    const depth = span._depth;
    const hasChildren = span._children.length > 0;
    const label = formatDuration(span.duration);
    // The duration goes after the bar, else before it, else (a long bar starting early) inside its end.
    let labelStyle = `left:calc(${left + width}% + 4px)`;
    let labelClass = "span-duration";
    if (left + width >= 80) {
      if (left >= 12) labelStyle = `right:calc(${100 - left}% + 4px)`;
      else {
        labelStyle = `right:calc(${100 - left - width}% + 6px)`;
        labelClass += " inside";
      }
    }
    const kind = tagValue(span.tags, "span.kind");
    const row = el("div", {
      class: "span-row" + (span._error ? " is-error" : ""),
      role: "treeitem", tabindex: "0", "aria-expanded": "false", "aria-level": String(depth + 1),
      "data-testid": "span-row",
      dataset: { spanId: span.spanID, depth: String(depth), service: span._service, error: String(span._error),
        parentId: span._parentId || "" },
    },
      el("div", { class: "span-name", style: `padding-left:${Math.min(depth, MAX_INDENT_DEPTH) * NAME_INDENT + 6}px` },
        hasChildren
          ? el("button", { type: "button", class: "toggle", "data-testid": "span-toggle", "aria-label": "Hide children",
            title: `${span._size - 1} descendant span${span._size === 2 ? "" : "s"}` })
          : el("span", { class: "toggle-spacer" }),
        el("span", { class: "swatch", style: `background:${color}` }),
        el("span", { class: "span-service", "data-testid": "span-service", text: span._service }),
        el("span", { class: "span-op", "data-testid": "span-name", text: span.operationName }),
        depth > MAX_INDENT_DEPTH ? el("span", { class: "badge muted", text: `depth ${depth}` }) : null,
        kind ? el("span", { class: "span-kind", text: String(kind).toLowerCase() }) : null,
        span._error ? el("span", { class: "error-mark", "data-testid": "span-error-mark", title: "Error",
          "aria-label": "error", text: "!" }) : null,
      ),
      el("div", { class: "span-time" },
        el("div", { class: "span-bar", style: `left:${left}%;width:max(${width}%, 2px);background:${color}` }),
        el("span", { class: labelClass, "data-testid": "span-duration", style: labelStyle, text: label }),
      ),
    );
    return el("div", { class: "span-item", dataset: { spanId: span.spanID } }, row);
  }

  function itemOf(spanId) {
    const body = document.querySelector("[data-testid=waterfall-rows]");
    if (!body || !currentTrace) return null;
    const span = currentTrace.byId.get(spanId);
    return span ? body.children[span._index] : null;
  }

  function onWaterfallClick(event) {
    const toggle = event.target.closest(".toggle");
    const row = event.target.closest(".span-row");
    if (!row || !currentTrace) return;
    const span = currentTrace.byId.get(row.dataset.spanId);
    if (!span) return;
    if (toggle) {
      event.stopPropagation();
      setCollapsed(span, !row.classList.contains("collapsed"));
      return;
    }
    toggleDetails(span);
  }

  function onWaterfallKey(event) {
    const row = event.target.closest(".span-row");
    if (!row || event.target !== row || !currentTrace) return;
    const span = currentTrace.byId.get(row.dataset.spanId);
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      toggleDetails(span);
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      let item = row.parentElement;
      do item = event.key === "ArrowDown" ? item.nextElementSibling : item.previousElementSibling;
      while (item && item.hidden);
      if (item) item.firstElementChild.focus();
    } else if (event.key === "ArrowLeft" && span._children.length) {
      setCollapsed(span, true);
    } else if (event.key === "ArrowRight" && span._children.length) {
      setCollapsed(span, false);
    }
  }

  /** Hide or show a span's descendants; spans collapsed below it stay collapsed. */
  function setCollapsed(span, collapsed) {
    const body = document.querySelector("[data-testid=waterfall-rows]");
    const items = body.children;
    const item = items[span._index];
    const row = item.firstElementChild;
    row.classList.toggle("collapsed", collapsed);
    const toggle = row.querySelector(".toggle");
    if (toggle) toggle.setAttribute("aria-label", collapsed ? "Show children" : "Hide children");
    const end = span._index + span._size;
    if (collapsed) {
      for (let i = span._index + 1; i < end; i++) items[i].hidden = true;
      return;
    }
    for (let i = span._index + 1; i < end; i++) {
      items[i].hidden = false;
      const inner = currentTrace.spans[i];
      if (items[i].firstElementChild.classList.contains("collapsed")) i += inner._size - 1;
    }
  }

  function setAllCollapsed(collapsed) {
    if (!currentTrace) return;
    const items = document.querySelector("[data-testid=waterfall-rows]").children;
    for (let i = 0; i < currentTrace.spans.length; i++) {
      const span = currentTrace.spans[i];
      const row = items[i].firstElementChild;
      if (span._children.length) row.classList.toggle("collapsed", collapsed);
      items[i].hidden = collapsed && span._depth > 0;
    }
  }

  function filterSpans(text) {
    if (!currentTrace) return;
    const needle = text.trim().toLowerCase();
    const items = document.querySelector("[data-testid=waterfall-rows]").children;
    let matches = 0;
    for (let i = 0; i < currentTrace.spans.length; i++) {
      const span = currentTrace.spans[i];
      let hit = false;
      if (needle) {
        hit = span.operationName.toLowerCase().includes(needle) || span._service.toLowerCase().includes(needle) ||
          span.spanID.includes(needle) ||
          (span.tags || []).some((t) => `${t.key}=${t.value}`.toLowerCase().includes(needle));
      }
      if (hit) matches++;
      items[i].firstElementChild.classList.toggle("match", hit);
    }
    document.querySelector("[data-testid=waterfall]").classList.toggle("filtering", !!needle);
    $("filter-count").textContent = needle ? `${matches} matching span${matches === 1 ? "" : "s"}` : "";
  }

  /** Open a span's details and scroll to it (used for ?span= and links to spans of this trace). */
  function revealSpan(spanId, open) {
    const span = currentTrace && currentTrace.byId.get(spanId);
    if (!span) return;
    for (let p = span._parent; p; p = p._parent) {
      const row = itemOf(p.spanID).firstElementChild;
      if (row.classList.contains("collapsed")) setCollapsed(p, false);
    }
    const item = itemOf(spanId);
    if (open && !item.querySelector(".span-detail")) toggleDetails(span);
    item.scrollIntoView({ block: "center" });
    item.firstElementChild.focus({ preventScroll: true });
  }

  function toggleDetails(span) {
    const item = itemOf(span.spanID);
    const row = item.firstElementChild;
    const existing = item.querySelector(".span-detail");
    if (existing) {
      existing.remove();
      row.setAttribute("aria-expanded", "false");
      row.classList.remove("open");
      return;
    }
    row.setAttribute("aria-expanded", "true");
    row.classList.add("open");
    item.append(spanDetail(span, currentTrace));
  }

  // ---------------------------------------------------------------------------------------------
  // Span details

  function spanDetail(span, model) {
    const color = serviceColor(span._service);
    const status = tagValue(span.tags, "otel.status_code");
    const statusText = tagValue(span.tags, "otel.status_description");
    const kind = tagValue(span.tags, "span.kind");
    const parentId = span._parentRef ? span._parentRef.spanID : null;
    const detail = el("div", { class: "span-detail", "data-testid": "span-detail",
      style: `border-left-color:${color}`, dataset: { spanId: span.spanID } });

    detail.append(
      el("div", { class: "detail-head" },
        el("h3", { class: "detail-title" }, el("span", { class: "span-service", text: span._service }),
          el("span", { "data-testid": "detail-operation", text: span.operationName })),
        el("div", { class: "detail-facts" },
          detailFact("Duration", formatDuration(span.duration), "detail-duration"),
          detailFact("Start", `+${formatDuration(span.startTime - model.start)}`, "detail-start", formatTime(span.startTime)),
          kind ? detailFact("Kind", String(kind), "detail-kind") : null,
          status ? detailFact("Status", statusText ? `${status}: ${statusText}` : String(status), "detail-status",
            null, String(status).toUpperCase() === "ERROR" ? "error-text" : "") : null,
          detailFact("Span ID", el("code", { text: span.spanID }), "detail-span-id"),
          detailFact("Parent ID", parentId ? parentLink(parentId, span, model) : el("span", { class: "muted", text: "none (root)" }),
            "detail-parent-id"),
        ),
      ),
    );

    const tags = (span.tags || []).slice().sort((a, b) => a.key.localeCompare(b.key));
    detail.append(section(`Attributes (${tags.length})`, "span-attributes",
      tags.length ? kvTable(tags) : el("p", { class: "muted", text: "No attributes." })));

    const logs = (span.logs || []).slice().sort((a, b) => a.timestamp - b.timestamp);
    if (logs.length) {
      const list = el("ol", { class: "events" });
      for (const log of logs) {
        const fields = log.fields || [];
        const name = tagValue(fields, "event");
        const rest = fields.filter((f) => f.key !== "event");
        list.append(el("li", { class: "event" + (name === "exception" ? " is-error" : ""), "data-testid": "span-event" },
          el("div", { class: "event-head" },
            el("span", { class: "event-time mono", "data-testid": "span-event-time",
              title: `${formatTime(log.timestamp)} (+${formatDuration(log.timestamp - model.start)} in the trace)`,
              text: `+${formatDuration(log.timestamp - span.startTime)}` }),
            el("span", { class: "event-name", "data-testid": "span-event-name", text: name || "(log)" })),
          rest.length ? kvTable(rest) : null));
      }
      detail.append(section(`Events (${logs.length})`, "span-events", list));
    }

    const links = (span.references || []).filter((r) => r !== span._parentRef);
    if (links.length) {
      const list = el("ul", { class: "links" });
      for (const ref of links) list.append(linkItem(ref, model));
      detail.append(section(`Links (${links.length})`, "span-links", list));
    }

    const process = span._process || {};
    const processTags = (process.tags || []).slice().sort((a, b) => a.key.localeCompare(b.key));
    detail.append(section(`Process: ${span._service}`, "span-process",
      processTags.length ? kvTable(processTags) : el("p", { class: "muted", text: "No resource attributes." }),
      true));

    detail.append(section("Raw span (JSON)", "span-json",
      el("pre", { class: "json" }, JSON.stringify(span, (k, v) => (k.startsWith("_") ? undefined : v), 2)), true));
    return detail;
  }

  function detailFact(label, value, testid, title, cls) {
    return el("div", { class: "detail-fact" }, el("span", { class: "detail-label", text: label }),
      el("span", { class: "detail-value " + (cls || ""), "data-testid": testid, title: title || undefined }, value));
  }

  function parentLink(parentId, span, model) {
    if (span._parent) {
      return el("a", { href: `/trace/${model.traceID}?span=${parentId}`, class: "mono", "data-testid": "parent-link",
        onclick: (e) => { e.preventDefault(); revealSpan(parentId, false); }, text: parentId });
    }
    return el("span", {}, el("code", { text: parentId }),
      el("span", { class: "muted", text: " (not received)" }));
  }

  function section(title, testid, content, collapsed = false) {
    const details = el("details", { class: "detail-section", "data-testid": testid, open: !collapsed },
      el("summary", { text: title }), content);
    return details;
  }

  function kvTable(pairs) {
    const tbody = el("tbody");
    for (const { key, type, value } of pairs) {
      tbody.append(el("tr", { dataset: { key } },
        el("th", { scope: "row", class: "mono", text: key }),
        el("td", { class: `value type-${(type || "string").toLowerCase()}`, "data-testid": "kv-value" },
          formatValue(type, value))));
    }
    return el("table", { class: "kv" }, tbody);
  }

  function formatValue(type, value) {
    if (value === null || value === undefined) return el("span", { class: "muted", text: "null" });
    if (typeof value === "object") return JSON.stringify(value);
    const text = String(value);
    if (text.length > 2000) {
      return el("details", { class: "long-value" }, el("summary", { text: `${text.slice(0, 200)}… (${text.length} chars)` }),
        el("pre", { text }));
    }
    return text;
  }

  function linkItem(ref, model) {
    const sameTrace = ref.traceID === model.traceID || ref.traceID.padStart(32, "0") === model.traceID;
    const item = el("li", { class: "link", "data-testid": "span-link" },
      el("span", { class: "badge muted", text: ref.refType === "FOLLOWS_FROM" ? "follows from" : ref.refType.toLowerCase() }),
      " ");
    const label = `trace ${ref.traceID.slice(0, 12)}… span ${ref.spanID}`;
    if (sameTrace) {
      if (model.byId.has(ref.spanID)) {
        const target = model.byId.get(ref.spanID);
        item.append(el("a", { href: `/trace/${model.traceID}?span=${ref.spanID}`, "data-testid": "span-link-open",
          onclick: (e) => { e.preventDefault(); revealSpan(ref.spanID, true); } },
          `${target._service}: ${target.operationName}`), el("span", { class: "muted mono", text: ` (${ref.spanID}, this trace)` }));
      } else {
        item.append(el("span", { class: "mono", text: `span ${ref.spanID}` }),
          el("span", { class: "muted", text: " (this trace, not received)" }));
      }
      return item;
    }
    const pending = el("span", { class: "mono", "data-testid": "span-link-unknown", title: ref.traceID, text: label });
    const note = el("span", { class: "muted", text: " (checking…)" });
    item.append(pending, note);
    let known = traceExists.get(ref.traceID);
    if (!known) {
      known = api(`/api/traces/${ref.traceID}`).then((b) => !!(b.data && b.data.length), () => false);
      traceExists.set(ref.traceID, known);
    }
    known.then((exists) => {
      if (exists) {
        pending.replaceWith(el("a", { href: `/trace/${ref.traceID}?span=${ref.spanID}`, "data-nav": true,
          "data-testid": "span-link-open", class: "mono", title: ref.traceID, text: label }));
        note.textContent = "";
      } else {
        note.textContent = " (that trace is not stored here)";
      }
    });
    return item;
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  function openTraceFromBox(event) {
    event.preventDefault();
    const input = $("trace-id-input");
    const id = normaliseTraceId(input.value);
    if (!id) {
      input.setCustomValidity("A trace ID is up to 32 hexadecimal digits (or paste a traceparent).");
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    input.value = "";
    input.blur();
    navigate(`/trace/${id.padStart(32, "0")}`);
  }

  function init() {
    document.addEventListener("click", onLinkClick);
    window.addEventListener("popstate", route);
    $("trace-id-form").addEventListener("submit", openTraceFromBox);
    $("trace-id-input").addEventListener("input", (e) => e.target.setCustomValidity(""));
    $("search-form").addEventListener("submit", onSearchSubmit);
    $("f-service").addEventListener("change", (e) => {
      $("f-service").dataset.wanted = e.target.value;
      $("f-operation").dataset.wanted = "";
      loadOperations(e.target.value, "");
    });
    $("f-operation").addEventListener("change", (e) => { $("f-operation").dataset.wanted = e.target.value; });
    $("f-lookback").addEventListener("change", (e) => {
      const custom = e.target.value === "custom";
      $("custom-range").hidden = !custom;
      if (custom && !$("f-start").value) {
        const now = Date.now() * 1000;
        $("f-start").value = toLocalInput(now - LOOKBACKS["1h"]);
        $("f-end").value = toLocalInput(now);
      }
    });
    $("results-sort").addEventListener("change", () => {
      if (currentResults.length) renderResults(currentResults, new URLSearchParams(location.search));
    });
    $("banner-close").addEventListener("click", hideBanner);
    loadServices();
    route();
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
