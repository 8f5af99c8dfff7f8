// The operator console: sign-in, the live feed, the actions, and the page's wiring. Every
// value from the API is inserted as text (textContent or text nodes), never as HTML: a
// symbol or an error holding markup shows as that markup.
"use strict";
(function () {
  const KEY = "recon.apiKey";
  const { $, state, el, text, api, when, changeLines, clear } = window.recon;
  const { loadStatus, loadRuns, loadAudit, loadBook, renderBook, scheduleBookReload, showHistory } = window.recon;

  // ---- sign in -----------------------------------------------------------------------
  async function signIn(key) {
    state.key = key;
    try {
      state.me = await api("GET", "/api/admin/whoami");
    } catch (err) {
      state.key = null;
      sessionStorage.removeItem(KEY);
      text("sign-in-error", "Sign-in failed: " + err.message);
      return;
    }
    sessionStorage.setItem(KEY, key);
    text("sign-in-error", "");
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = false;
    text("who", `${state.me.name} (${state.me.capabilities.join(", ")})`);
    // Buttons only for keys that may use them.
    $("actions").hidden = !state.me.capabilities.includes("admin:write");
    if (state.me.capabilities.includes("events:read")) startStream();
    await Promise.all([loadBook(), refresh()]);
    state.timers.push(setInterval(refresh, 5000));
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    state.timers.forEach(clearInterval);
    state.timers = [];
    if (state.stream) state.stream.stop();
    location.reload();
  }

  async function refresh() {
    await Promise.all([loadStatus(), loadRuns(), loadAudit()]);
  }

  // ---- events ----------------------------------------------------------------------------
  function startStream() {
    state.stream = new window.ReconStream({
      ticket: async () => (await api("POST", "/api/stream/tickets")).ticket,
      onState: (s) => {
        text("stream-state", "stream: " + s);
        $("stream-state").classList.toggle("on", s === "live");
      },
      onEvent: onEvent,
    });
    state.stream.start();
  }

  function onEvent(type, id, data) {
    const list = $("event-list");
    const item = el("li", { className: type === "system:error" ? "system-error" : "", dataset: { eventId: id, type } });
    item.appendChild(el("div", { className: "event-head" },
      el("strong", null, type), el("span", { className: "muted" }, "#" + id), el("span", null, when(data.timestamp)),
      data.trigger ? el("span", { className: "muted" }, data.trigger) : null));
    if (type === "system:error") {
      item.appendChild(el("div", null, data.error || data.message || ""));
    } else {
      for (const d of data.details || []) {
        item.appendChild(el("div", null, `${d.change} ${d.symbol}`));
        item.appendChild(el("div", null, changeLines(d.fields)));
      }
      state.changed = new Set((data.details || []).map((d) => d.assetId));
      scheduleBookReload();
      if (state.selected && (data.details || []).some((d) => d.symbol === state.selected)) showHistory(state.selected);
    }
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 200) list.removeChild(list.lastChild);
  }

  // ---- actions -------------------------------------------------------------------------
  async function act(label, path) {
    const buttons = ["sync-now", "preview", "apply-mass"].map($);
    buttons.forEach((b) => { b.disabled = true; });
    text("action-result", label + "…");
    try {
      const answer = await api("POST", path);
      text("action-result", answer.message);
      return answer;
    } catch (err) {
      text("action-result", `${label} failed: ${err.message}`);
      return null;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      refresh();
    }
  }

  async function syncNow() {
    $("apply-mass").hidden = true;
    await act("Sync", "/api/admin/jobs/sync-positions");
  }

  async function preview() {
    $("apply-mass").hidden = true;
    clear($("preview-result"));
    const answer = await act("Preview", "/api/admin/jobs/sync-positions?dryRun=true");
    if (!answer || !answer.preview) return;
    state.lastPreview = answer.preview;
    renderPreview(answer.preview);
    // Only after a preview the removal cap refused.
    $("apply-mass").hidden = !(answer.preview.refused && answer.preview.refused.check === "mass_removal");
  }

  function renderPreview(p) {
    const box = clear($("preview-result"));
    box.appendChild(el("h3", null, "Preview (nothing written)"));
    if (p.refused) box.appendChild(el("p", { className: "refused", id: "preview-refused" }, `Refused (${p.refused.check}): ${p.refused.reason}`));
    const kinds = [["would create", p.created], ["would update", p.updated], ["would remove", p.removed], ["held back", p.heldBack]];
    const list = el("dl", { id: "preview-lists" });
    for (const [label, symbols] of kinds) {
      list.appendChild(el("dt", null, label));
      list.appendChild(el("dd", null, symbols.length ? symbols.join(", ") : "—"));
    }
    list.appendChild(el("dt", null, "errors"));
    list.appendChild(el("dd", null, p.errors.length ? p.errors.map((e) => `${e.symbol}: ${e.error}`).join("; ") : "—"));
    box.appendChild(list);
    const details = el("div", { id: "preview-details" });
    for (const d of p.details) details.appendChild(el("div", null, el("strong", null, `${d.change} ${d.symbol}`), changeLines(d.fields)));
    box.appendChild(details);
  }

  async function applyMassRemoval() {
    const p = state.lastPreview;
    if (!p) return;
    const names = p.removed.join(", ");
    if (!window.confirm(`Apply the sync and REMOVE ${p.summary.removedCount} positions: ${names}?`)) return;
    $("apply-mass").hidden = true;
    await act("Sync with mass removal", "/api/admin/jobs/sync-positions?allowMassRemoval=true");
  }

  // ---- wiring ----------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("api-key").value.trim());
    });
    $("sign-out").addEventListener("click", signOut);
    $("sync-now").addEventListener("click", syncNow);
    $("preview").addEventListener("click", preview);
    $("apply-mass").addEventListener("click", applyMassRemoval);
    $("book-filter").addEventListener("input", (e) => { state.filter = e.target.value; renderBook(); });
    $("book-account").addEventListener("change", (e) => { state.account = e.target.value; renderBook(); });
    document.querySelectorAll("#book-table th[data-key]").forEach((th) => th.addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      renderBook();
    }));
    const saved = sessionStorage.getItem(KEY);
    if (saved) signIn(saved);
  });
})();
