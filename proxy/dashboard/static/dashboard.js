// llm-proxy dashboard: polls /dashboard/data and renders it. No dependencies, no build step.
// Every value from the server is written with textContent, never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const DATA_URL = "/dashboard/data";
  const $ = (id) => document.getElementById(id);

  function fmt(n, digits) {
    if (n === null || n === undefined) return "–";
    if (typeof n !== "number") return String(n);
    return n.toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 1 : digits });
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return fmt(s, 1) + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h > 0 ? h + " h " + (m % 60) + " min" : m + " min " + Math.floor(s % 60) + " s";
  }

  function setText(id, value) {
    const el = $(id);
    if (el.textContent !== value) el.textContent = value;
  }

  // Replace a table's rows; each column is [text-getter, class-getter or undefined].
  function fillTable(id, rows, columns, rowAttrs) {
    const body = $(id).tBodies[0];
    const out = document.createDocumentFragment();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = columns.length;
      td.textContent = "none";
      tr.appendChild(td);
      out.appendChild(tr);
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      if (rowAttrs) rowAttrs(tr, row);
      for (const [text, cls] of columns) {
        const td = document.createElement("td");
        td.textContent = text(row);
        if (cls) td.className = cls(row);
        tr.appendChild(td);
      }
      out.appendChild(tr);
    }
    body.replaceChildren(out);
  }

  function chart(perSecond, errorsPerSecond) {
    const svg = $("rps-chart");
    const ns = "http://www.w3.org/2000/svg";
    const max = Math.max(1, ...perSecond);
    const w = 600 / perSecond.length;
    const out = document.createDocumentFragment();
    perSecond.forEach((n, i) => {
      for (const [value, cls] of [[n, "ok"], [errorsPerSecond[i] || 0, "bad"]]) {
        if (!value) continue;
        const h = (value / max) * 76;
        const r = document.createElementNS(ns, "rect");
        r.setAttribute("x", String(i * w + 0.5));
        r.setAttribute("y", String(80 - h));
        r.setAttribute("width", String(Math.max(1, w - 1)));
        r.setAttribute("height", String(h));
        r.setAttribute("class", cls);
        out.appendChild(r);
      }
    });
    svg.replaceChildren(out);
  }

  const usageColumns = [
    [(r) => r.name], [(r) => fmt(r.requests, 0)], [(r) => fmt(r.prompt_tokens, 0)],
    [(r) => fmt(r.completion_tokens, 0)], [(r) => fmt(r.cached_tokens, 0)],
    [(r) => fmt(r.cost_usd, 6) + (r.unpriced ? " (+" + r.unpriced + " unpriced)" : "")],
  ];

  function statusClass(line) {
    return line.status ? "s" + String(line.status)[0] : "";
  }

  function render(d) {
    setText("requests-total", fmt(d.requests.total, 0));
    setText("rps-10s", fmt(d.requests.rps_10s, 2));
    setText("rps-60s", fmt(d.requests.rps_60s, 2));
    setText("in-flight", fmt(d.in_flight, 0));
    setText("errors-total", fmt(d.requests.errors, 0));
    setText("cooldowns-count", fmt(d.cooldowns.length, 0));
    setText("uptime", duration(d.uptime_s));
    chart(d.requests.per_second, d.requests.errors_per_second);

    fillTable("latency", [["total", d.latency_ms], ["time to first token", d.ttft_ms]], [
      [(r) => r[0]], [(r) => fmt(r[1].p50)], [(r) => fmt(r[1].p90)], [(r) => fmt(r[1].p99)],
      [(r) => fmt(r[1].count, 0)],
    ]);
    fillTable("errors", d.errors, [[(r) => r.kind], [(r) => fmt(r.last_60s, 0)], [(r) => fmt(r.total, 0)]]);
    fillTable("models", d.models, usageColumns);
    $("keys-section").hidden = d.keys === null;
    if (d.keys !== null) fillTable("keys", d.keys, usageColumns);
    fillTable("cooldowns", d.cooldowns, [[(r) => r.scope], [(r) => duration(r.remaining_s)]],
      (tr, r) => { tr.dataset.scope = r.upstream || r.scope; });
    setText("pacing-note", d.pacing.available ? "" : "No pacer is configured.");
    fillTable("pacing", d.pacing.scopes, [
      [(r) => r.scope], [(r) => r.state + (r.detail ? " (" + r.detail + ")" : "")],
      [(r) => duration(r.remaining_s)],
    ]);
    fillTable("holds", d.pacing.recent_holds, [
      [(r) => r.scope], [(r) => r.kind], [(r) => fmt(r.count, 0)], [(r) => duration(r.waited_s)],
    ]);
    setText("trims-summary", fmt(d.trims.requests, 0) + " requests trimmed, " +
      fmt(d.trims.messages, 0) + " messages removed");
    fillTable("trims", d.trims.recent, [
      [(r) => new Date(r.at * 1000).toLocaleTimeString()], [(r) => r.route || "–"],
      [(r) => r.model || "–"], [(r) => fmt(r.removed, 0)], [(r) => fmt(r.budget, 0)],
      [(r) => fmt(r.prompt_tokens_est, 0)],
    ]);
    fillTable("recent", d.recent, [
      [(r) => r.request_id], [(r) => r.route || "–"], [(r) => r.upstream || "–"],
      [(r) => r.model || "–"], [(r) => fmt(r.status, 0), statusClass],
      [(r) => fmt((r.attempts || []).length, 0)], [(r) => fmt(r.duration_ms)], [(r) => fmt(r.ttft_ms)],
      [(r) => fmt(r.prompt_tokens, 0) + " / " + fmt(r.completion_tokens, 0)],
      [(r) => fmt(r.cost_usd, 6)], [(r) => r.error || "", () => "error"],
    ], (tr, r) => {
      tr.dataset.requestId = r.request_id;
      tr.addEventListener("click", () => {
        const pre = $("recent-detail");
        pre.textContent = JSON.stringify(r, null, 2);
        pre.hidden = false;
      });
    });
  }

  async function poll() {
    try {
      const resp = await fetch(DATA_URL, { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401) { window.location.reload(); return; }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      $("status").className = "status";
      setText("status", "live, updated " + new Date().toLocaleTimeString());
    } catch (err) {
      $("status").className = "status down";
      setText("status", "disconnected (" + err.message + "), retrying");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
