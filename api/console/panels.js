// The read-only panels: Job, Runs, Audit, Book and History. Values are inserted as text.
"use strict";
(function () {
  const { $, state, el, clear, text, link, when, api, changeLines } = window.recon;

  // GET `path`; on failure its message goes to the panel's error line `errorId` and the
  // answer is null, so the panel keeps what it showed.
  async function read(path, errorId) {
    try {
      const answer = await api("GET", path);
      text(errorId, "");
      return answer;
    } catch (err) {
      text(errorId, err.message);
      return null;
    }
  }

  // ---- job, runs, audit ----------------------------------------------------------------

  function fields(target, pairs) {
    clear(target);
    for (const [label, value] of pairs) {
      target.appendChild(el("dt", null, label));
      target.appendChild(el("dd", null, value instanceof Node ? value : value == null ? "—" : String(value)));
    }
  }

  async function loadStatus() {
    const status = await read("/api/admin/jobs/status", "job-error");
    if (!status) return;
    const job = status.positionReconciliation;
    const last = job.lastResult && job.lastResult.summary;
    fields($("job-fields"), [
      ["schedule", job.schedule],
      ["enabled", job.enabled ? "yes" : "no"],
      ["running", job.isRunning ? "yes" : job.isPending ? "pending" : "no"],
      ["current run", job.currentFlowRunId],
      ["last run", when(job.lastRunTime)],
      ["last state", job.lastRunState],
      ["last duration", job.lastRunDuration == null ? null : `${(job.lastRunDuration / 1000).toFixed(1)} s`],
      ["next run", when(job.nextRunTime)],
      ["totals", `${job.totalRuns} runs: ${job.successfulRuns} ok, ${job.failedRuns} failed, ${job.skippedRuns} skipped`],
      ["last changes", last ? `${last.totalChanges} (${last.createdCount} created, ${last.updatedCount} updated, ${last.removedCount} removed, ${last.errorCount} errors)` : null],
      ["last error", job.lastError],
      ["Prefect UI", job.lastFlowRunUrl ? link(job.lastFlowRunUrl, "last run") : null],
    ]);
    const stream = status.stream;
    // Shown once the fill listener has ever run.
    const present = stream && (stream.connected || stream.since || stream.lastError || stream.fillsApplied);
    $("stream-heading").hidden = !present;
    $("stream-fields").hidden = !present;
    if (present) {
      fields($("stream-fields"), [
        ["connected", stream.connected ? "yes" : "no"],
        ["since", when(stream.since)],
        ["account", stream.accountId],
        ["fills applied", stream.fillsApplied],
        ["reconnects", stream.reconnects],
        ["last fill", when(stream.lastEventAt)],
        ["last error", stream.lastError],
      ]);
    }
  }

  async function loadRuns() {
    const answer = await read("/api/admin/jobs/runs?limit=15", "runs-error");
    if (!answer) return;
    const body = clear(document.querySelector("#runs-table tbody"));
    for (const run of answer.runs) {
      body.appendChild(el("tr", { dataset: { flowRunId: run.flowRunId } },
        el("td", null, when(run.startTime)),
        el("td", null, run.state || "—"),
        el("td", { className: "num" }, run.durationSeconds == null ? "—" : `${run.durationSeconds.toFixed(1)} s`),
        el("td", null, run.trigger + (run.dryRun ? " (preview)" : "") + (run.allowMassRemoval ? " (override)" : "")),
        el("td", null, run.who || "—"),
        el("td", { className: "num" }, run.totalChanges == null ? "—" : run.totalChanges),
        el("td", null, link(run.flowRunUrl, run.name))));
    }
  }

  async function loadAudit() {
    const answer = await read("/api/admin/audit?limit=20", "audit-error");
    if (!answer) return;
    const body = clear(document.querySelector("#audit-table tbody"));
    for (const entry of answer.entries) {
      body.appendChild(el("tr", null,
        el("td", null, when(entry.at)), el("td", null, entry.actor), el("td", null, entry.action),
        el("td", null, entry.subject || "—"), el("td", null, entry.flowRunId || "—")));
    }
  }

  // ---- book ----------------------------------------------------------------------------
  async function loadBook() {
    const all = [];
    let cursor = null;
    try {
      do {
        const page = await api("GET", "/api/positions?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
        all.push(...page.positions);
        cursor = page.nextCursor;
      } while (cursor);
      text("book-error", "");
    } catch (err) {
      text("book-error", err.message);
      return;
    }
    state.positions = all;
    const accounts = [...new Set(all.map((p) => p.accountId))].sort();
    const select = $("book-account");
    select.hidden = accounts.length < 2;
    if (accounts.length >= 2) {
      const current = state.account;
      clear(select).appendChild(el("option", { value: "" }, "all accounts"));
      for (const a of accounts) select.appendChild(el("option", { value: a }, a));
      select.value = accounts.includes(current) ? current : "";
    }
    renderBook();
  }

  const NUMERIC = new Set(["qty", "avgEntryPrice", "marketValue", "unrealizedPl"]);

  function renderBook() {
    const { key, dir } = state.sort;
    const needle = state.filter.toLowerCase();
    const rows = state.positions
      .filter((p) => !state.account || p.accountId === state.account)
      .filter((p) => !needle || `${p.symbol} ${p.side} ${p.accountId}`.toLowerCase().includes(needle))
      .sort((a, b) => {
        const x = a[key], y = b[key];
        const c = NUMERIC.has(key) ? Number(x || 0) - Number(y || 0) : String(x).localeCompare(String(y));
        return c * dir;
      });
    const body = clear(document.querySelector("#book-table tbody"));
    for (const p of rows) {
      const classes = [state.changed.has(p.assetId) ? "changed" : "", state.selected === p.symbol ? "selected" : ""];
      body.appendChild(el("tr", {
        className: classes.join(" ").trim(), dataset: { symbol: p.symbol, assetId: p.assetId },
        onclick: () => showHistory(p.symbol),
      },
      el("td", null, p.symbol), el("td", null, p.side || ""),
      el("td", { className: "num" }, p.qty), el("td", { className: "num" }, p.avgEntryPrice),
      el("td", { className: "num" }, p.marketValue ?? "—"), el("td", { className: "num" }, p.unrealizedPl ?? "—")));
    }
    text("book-count", `${rows.length} of ${state.positions.length}`);
    document.querySelectorAll("#book-table th").forEach((th) => {
      th.classList.toggle("sorted-asc", th.dataset.key === key && dir === 1);
      th.classList.toggle("sorted-desc", th.dataset.key === key && dir === -1);
    });
  }

  let bookReload = null;
  function scheduleBookReload() {
    clearTimeout(bookReload);
    bookReload = setTimeout(loadBook, 250);
  }

  // ---- history -------------------------------------------------------------------------
  async function showHistory(symbol) {
    state.selected = symbol;
    renderBook();
    text("history-symbol", symbol);
    text("history-error", "");
    clear($("history-list"));
    clear($("history-chart"));
    const answer = await read("/api/positions/" + encodeURIComponent(symbol) + "/history", "history-error");
    if (!answer) return;
    const list = $("history-list");
    for (const entry of answer.history) {
      list.appendChild(el("li", null,
        el("div", { className: "event-head" }, el("strong", null, entry.change), el("span", null, when(entry.timestamp)),
          el("span", { className: "muted" }, "event " + entry.eventId)),
        changeLines(entry.fields)));
    }
    // Oldest first; a field absent from an entry kept its value.
    let qty = 0;
    const points = [];
    for (const entry of [...answer.history].reverse()) {
      const change = entry.fields.qty;
      if (entry.change === "removed") qty = 0;
      else if (change && change.after !== null) qty = Number(change.after);
      points.push({ t: new Date(entry.timestamp), qty, label: entry.change === "removed" ? "0" : (change ? change.after : String(qty)) });
    }
    $("history-chart").appendChild(window.reconChart.quantityChart(points));
  }


  Object.assign(window.recon, { loadStatus, loadRuns, loadAudit, loadBook, renderBook, scheduleBookReload, showHistory });
})();
