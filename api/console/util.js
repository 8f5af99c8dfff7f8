// The console's shared pieces: its state, DOM helpers that only ever insert text, and the
// API client (the key goes in the Authorization header, never in a URL).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    key: null, me: null, positions: [], changed: new Set(), sort: { key: "symbol", dir: 1 },
    filter: "", account: "", selected: null, stream: null, timers: [], lastPreview: null,
  };

  // ---- helpers -----------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "className") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); return node; };
  const text = (id, value) => { $(id).textContent = value == null ? "" : String(value); };
  function link(url, label) {
    // Only http(s) links: a URL from anywhere else never becomes a javascript: href.
    if (typeof url !== "string" || !/^https?:\/\//.test(url)) return document.createTextNode(label || "");
    return el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, label || url);
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: "Bearer " + state.key, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok && response.status !== 202) throw new ApiError(response.status, body);
    return body;
  }

  function changeLines(fieldsMap) {
    return Object.entries(fieldsMap || {}).map(([name, v]) =>
      el("div", { className: "change" }, `${name}: ${v.before ?? "—"} → ${v.after ?? "—"}`));
  }

  window.recon = { $, state, el, clear, text, link, when, ApiError, api, changeLines };
})();
