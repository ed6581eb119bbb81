// Shared helpers of the dashboard pages. Data from the daemon is only ever inserted with
// textContent (never innerHTML): program names and alert messages come from controllers.
"use strict";

const M = (() => {
  const body = document.body;

  /** Build an element; string children become text nodes. attrs go through setAttribute. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Path segment encoding for the API (slashes inside a name are escaped too). */
  const seg = (s) => encodeURIComponent(String(s));

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  async function api(path, options) {
    const resp = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options || {}));
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.error) || resp.statusText || "request failed");
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function notice(text, kind) {
    const p = document.getElementById("notice");
    if (!p) return;
    p.textContent = text || "";
    p.className = "notice " + (kind || "");
    p.hidden = !text;
  }

  /** Call fn at most once per `ms`, always after the last request (trailing edge). */
  function debounce(fn, ms) {
    let timer = null;
    return () => {
      if (timer !== null) return;
      timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
  }

  /** Subscribe to the daemon's server-sent events; handlers: {part, alert, machine}. */
  function live(handlers) {
    const badge = document.getElementById("live");
    const es = new EventSource("/api/events");
    es.onopen = () => { badge.textContent = "live"; badge.className = "live on"; };
    es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "live off"; };
    for (const kind of ["part", "alert", "machine", "config"]) {
      es.addEventListener(kind, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        body.dataset.events = String(Number(body.dataset.events || 0) + 1);
        if (handlers[kind]) handlers[kind](data);
      });
    }
    window.addEventListener("pagehide", () => es.close());
    return es;
  }

  /** Replace a tbody's rows, keeping at most `cap`. */
  function fill(tbody, rows, cap) {
    tbody.replaceChildren(...rows.slice(0, cap || rows.length));
  }

  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return typeof v === "number" ? v.toFixed(digits === undefined ? 4 : digits) : String(v);
  }

  function time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19);
  }

  function badge(text, cls) { return el("span", { class: "badge " + (cls || text) }, text); }
  // Each source of a machine that is not connected, with the reason (a refused password, a
  // certificate to trust, a server that does not answer): never just "connecting" forever.
  function sourceProblems(m) {
    return (m.sources || []).filter((s) => s.state !== "connected").map((s) =>
      el("div", { class: "source-state", "data-state": s.state },
        badge(`${s.type} ${s.state}`, "conn-" + s.state), s.reason ? " " + s.reason : ""));
  }

  function featureHref(machine, program, feature) {
    return "/feature" + query({ machine, program, feature });
  }

  function machineHref(machine) { return "/machine" + query({ id: machine }); }

  function alertRow(a, extraCells, opts) {
    const cells = [
      el("td", {}, time(a.time)),
      el("td", {}, badge(a.severity)),
      el("td", {}, badge(a.state)),
    ];
    if (!opts || !opts.noMachine) {
      cells.push(el("td", {}, el("a", { href: machineHref(a.machine) }, a.machine)));
      cells.push(el("td", { class: "program" }, a.program));
    }
    if (opts && opts.kind) cells.push(el("td", {}, a.kind));
    if (!opts || !opts.noFeature) {
      cells.push(el("td", {}, a.program && a.feature !== "connection"
        ? el("a", { href: featureHref(a.machine, a.program, a.feature) }, a.feature) : a.feature));
    }
    cells.push(el("td", { class: "num" }, a.part_number));
    cells.push(el("td", { class: "message" }, a.message));
    for (const c of extraCells || []) cells.push(c);
    return el("tr", { "data-alert-id": a.id, "data-state": a.state, class: "sev-" + a.severity }, ...cells);
  }

  return { el, seg, query, api, notice, debounce, live, fill, num, time, badge, sourceProblems, featureHref, machineHref, alertRow,
           data: body.dataset };
})();
