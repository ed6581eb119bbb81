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

  /** Say `text` on the notice line ("ok" or "error"). An `answer` tells someone what came of what they
   *  just did (acknowledged, recorded, refused, a token to enter first): it stays until the next notice.
   *  The rest (a refresh that failed) is taken back by the next refresh that works (`settled`). */
  function notice(text, kind, answer) {
    const p = document.getElementById("notice");
    if (!p) return;
    p.textContent = text || "";
    p.className = "notice " + (kind || "");
    p.hidden = !text;
    p.dataset.answer = text && answer ? "1" : "";
  }

  /** A refresh worked: take back what a failed one said, never an answer. Every tap is followed by a
   *  refresh (its own, the live event it causes, the next part) within about a second: clearing the
   *  answer there showed it for that second only, gone before a glance at the tablet (or before a
   *  browser on a loaded machine looked). */
  function settled() {
    const p = document.getElementById("notice");
    if (p && !p.dataset.answer) notice("");
  }

  /** The answer to what someone just did (see `notice`). */
  const answer = (text, kind) => notice(text, kind, true);

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
    for (const kind of ["part", "alert", "machine", "config", "action"]) {
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
    const level = a.level || a.condition || a.severity;  // a feature's condition, a machine alert's severity
    const cells = [
      el("td", {}, time(a.time)),
      el("td", {}, badge(level.replaceAll("_", " "), level)),
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
    cells.push(el("td", { class: "num" }, a.parts || a.part_number));
    cells.push(el("td", { class: "message" }, a.message));
    for (const c of extraCells || []) cells.push(c);
    return el("tr", { "data-alert-id": a.id, "data-state": a.state, "data-feature": a.feature, "data-level": level,
                      class: "sev-" + a.severity }, ...cells);
  }

  /** Every cell of a grid table carries its column's name (data-label), which the narrow layout
   *  shows in front of the value (one block per row below 960 px: no sideways scrolling). */
  function labelRows(table) {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    const label = (tr) => [...tr.children].forEach((td, i) => { if (heads[i] && !td.hasAttribute("colspan")) td.dataset.label = heads[i]; });
    const tbody = table.tBodies[0];
    if (!tbody) return;
    [...tbody.rows].forEach(label);
    new MutationObserver((changes) => {
      for (const c of changes) for (const n of c.addedNodes) if (n.nodeName === "TR") label(n);
    }).observe(tbody, { childList: true });
  }
  document.querySelectorAll("table.grid").forEach(labelRows);

  const TOKEN_KEY = "monitor-token";
  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY) || "",
    set: (v) => sessionStorage.setItem(TOKEN_KEY, v),
  };

  /** Who holds this tab's token ({user, role, may}) once known; null without a token or before the answer. */
  let me = null;

  /** The token field of a page: kept in this tab's session storage; says whose token it is and calls
   *  ``onUser`` once it is known (pages redraw what they offer: an operator gets no controller write). */
  function tokenField(input, who, onUser) {
    if (!input) return;
    input.value = token.get();
    const check = async () => {
      me = null;
      if (token.get()) {
        try {
          me = await api("/api/whoami", { headers: { Accept: "application/json", Authorization: "Bearer " + token.get() } });
        } catch (e) { me = null; if (who) who.textContent = "unknown token"; }
      }
      if (who && (me || !token.get())) who.textContent = me ? `${me.user} (${me.role})` : "";
      if (onUser) onUser(me);
    };
    input.addEventListener("change", () => { token.set(input.value); check(); });
    check();
  }

  /** False once the tab's user is known not to be allowed ``what`` (unknown: offered, the server decides). */
  const may = (what) => !me || !me.may || me.may.includes(what);

  /** POST a person's change with the token of this tab; resolves to the answer, rejects with .status. */
  async function act(path, payload) {
    const headers = { Accept: "application/json", "Content-Type": "application/json" };
    if (token.get()) headers.Authorization = "Bearer " + token.get();
    return api(path, { method: "POST", headers, body: JSON.stringify(payload || {}) });
  }

  const ARM_MS = 8000;
  /** Armed two-tap buttons by key (condition and kind) -> Date.now() until which the next tap confirms.
   *  Kept outside the cards: a card is redrawn on every part and refresh, and a redraw between the two
   *  taps must not turn the second tap into a first one. */
  const armedUntil = new Map();
  /** Comments being typed to go with an acknowledgement, by condition id. Kept outside the cards for the
   *  same reason: a redraw while someone types (the next part, the refresh the token field asks for)
   *  must neither empty the field nor let the tap that follows acknowledge without the comment. */
  const comments = new Map();

  /** Two taps on ``b``: the first says what will happen (``confirm``), the second runs ``run``. */
  function twoTap(b, key, label, confirm, needToken, run) {
    const isArmed = () => (armedUntil.get(key) || 0) > Date.now();
    const show = (on) => { b.textContent = on ? confirm : label; b.classList.toggle("armed", on); };
    const disarmLater = () => setTimeout(() => { if (!isArmed() && b.classList.contains("armed")) show(false); },
      Math.max(0, (armedUntil.get(key) || 0) - Date.now()) + 20);
    if (isArmed()) { show(true); disarmLater(); }
    b.addEventListener("click", async () => {
      if (!token.get()) { answer(`Enter your token (top of the page) ${needToken}.`, "error"); return; }
      if (!isArmed()) { armedUntil.set(key, Date.now() + ARM_MS); show(true); disarmLater(); return; }
      armedUntil.delete(key);
      show(false);
      await run();
    });
  }

  const LEFT = (c) => {
    if (c.level === "out_of_tolerance") return "Parts left: none, out of tolerance now";
    if (c.parts_left === null || c.parts_left === undefined) return "";
    return `Parts left: ~${Math.max(0, Math.round(c.parts_left))}`;
  };

  /** A shop-floor card: the light (colour and word), the condition that matters most, parts left,
   *  the one action to take and the acknowledge button; the rest of the conditions beneath. */
  function card(c, onChange) {
    const head = el("div", { class: "light" },
      el("a", { class: "name", href: machineHref(c.machine) }, c.machine),
      el("span", { class: "word" }, c.word));
    const bodyDiv = el("div", { class: "body" });
    const t = c.top;
    if (!t) {
      bodyDiv.append(el("div", { class: "feature" }, "All features in control"),
        el("div", { class: "todo" }, "Keep running."));
    } else {
      bodyDiv.append(
        el("div", { class: "feature" }, t.feature === "connection" ? "Connection" : t.feature, " ",
          badge(t.level.replaceAll("_", " "), t.level)),
        el("div", { class: "left" }, LEFT(t)),
        el("div", { class: "todo", "data-role": "action" }, t.action));
      const act_ = el("div", { class: "act" });
      if (t.state === "open") {
        const comment = el("input", { type: "text", class: "comment", "data-condition": t.id, placeholder: "comment (optional)",
                                      "aria-label": "comment for " + t.feature });
        comment.value = comments.get(t.id) || "";
        comment.addEventListener("input", () => comments.set(t.id, comment.value));
        const typing = document.activeElement;  // still in the card this one replaces: typing goes on here
        if (typing && typing.classList.contains("comment") && typing.dataset.condition === t.id) {
          const [from, to] = [typing.selectionStart, typing.selectionEnd];
          queueMicrotask(() => { if (comment.isConnected) { comment.focus(); comment.setSelectionRange(from, to); } });
        }
        const button = el("button", { type: "button", class: "ack" }, "Acknowledge");
        button.addEventListener("click", async () => {
          if (!token.get()) { answer("Enter your token (top of the page) to acknowledge.", "error"); return; }
          try {
            const r = await act(`/api/alerts/${seg(t.id)}/ack`, { comment: comment.value });
            comments.delete(t.id);
            answer(`Acknowledged by ${r.action ? r.action.user : "you"}: ${t.feature}`, "ok");
            if (onChange) onChange();
          } catch (e) { answer(`Refused (${e.status || "error"}): ${e.message}`, "error"); }
        });
        act_.append(button, comment);
      } else {
        act_.append(el("span", { class: "meta" }, `acknowledged${t.acknowledged_by ? " by " + t.acknowledged_by : ""}`));
      }
      bodyDiv.append(act_);
      const record = el("div", { class: "act record" });
      const recordButton = (label, confirmText, payloads, done) => {
        // two taps: the first says what will be recorded, the second records it (no mis-tap with a glove)
        const b = el("button", { type: "button", class: "record", "data-kind": payloads[0].kind }, label);
        twoTap(b, `${t.id} ${payloads[0].kind}`, label, "Tap again: " + confirmText, "to record what you did", async () => {
          try {
            let who = "you";
            for (const p of payloads) {
              const r = await act("/api/actions", p);
              if (r.action) who = r.action.user;
            }
            answer(`${done} (recorded by ${who})`, "ok");
            if (onChange) onChange();
          } catch (e) { answer(`Refused (${e.status || "error"}): ${e.message}`, "error"); }
        });
        return b;
      };
      if (t.offsets && t.offsets.length) {
        const what = t.offsets.map((o) => `${o.label} ${o.change_mm >= 0 ? "+" : ""}${Number(o.change_mm).toFixed(4)} mm`).join(", ");
        record.append(recordButton("Offset applied", what, t.offsets.map((o) => (
          { kind: "offset_applied", alert_id: t.id, register: o.register, change: o.change_mm })), `Offset applied: ${what}`));
      }
      if (t.offsets && t.offsets.length && c.writable && !may("write_offset")) {
        record.append(el("span", { class: "meta", "data-role": "apply-needs" }, "Writing the offset on the controller needs an engineer."));
      }
      if (t.offsets && t.offsets.length && c.writable && may("write_offset")) {
        // the monitor writes the advice on the controller itself (engineers; docs/offsets.md), two taps too
        const what = t.offsets.map((o) => `${o.label} ${o.change_mm >= 0 ? "+" : ""}${Number(o.change_mm).toFixed(4)} mm`).join(", ");
        const label = "Apply on the controller";
        const b = el("button", { type: "button", class: "record apply", "data-kind": "apply_offset" }, label);
        twoTap(b, `${t.id} apply_offset`, label, "Tap again: write " + what, "to apply an offset", async () => {
          b.textContent = "Writing between parts…";
          b.disabled = true;
          try {
            const body = t.offsets.length === 1 ? { expected: t.offsets[0].change_mm } : {};
            const r = await act(`/api/conditions/${seg(t.id)}/offset`, body);
            const lines = (r.outcomes || []).map((o) => o.applied
              ? `${o.action.register ? o.action.register.label : ""}: ${o.write.old_value.toFixed(4)} → ${o.write.new_value.toFixed(4)}`
              : `${o.action.register ? o.action.register.label : ""} refused (${o.refused.reason}): ${o.refused.message}`);
            const ok = (r.outcomes || []).every((o) => o.applied);
            answer((ok ? "Applied on the controller: " : "Not applied: ") + lines.join("; "), ok ? "ok" : "error");
            if (onChange) onChange();
          } catch (e) { answer(`Refused (${e.status || "error"}): ${e.message}`, "error"); }
          finally { b.disabled = false; b.textContent = label; }
        });
        record.append(b);
      }
      if (t.tool) {
        record.append(recordButton("Tool changed", `T${String(t.tool).replace(/^T/, "")} replaced`,
          [{ kind: "tool_changed", alert_id: t.id, tool: String(t.tool) }], `Tool ${t.tool} changed`));
      }
      if (t.level === "out_of_tolerance" && t.last_part) {
        record.append(recordButton(`Part ${t.last_part} quarantined`, `part ${t.last_part} set aside`,
          [{ kind: "part_quarantined", alert_id: t.id, part_number: t.last_part }], `Part ${t.last_part} quarantined`));
      }
      if (record.childNodes.length) bodyDiv.append(record);
      bodyDiv.append(el("div", { class: "meta" }, `${c.program || ""} · parts ${t.parts}` + (t.offset ? ` · offset ${t.offset}` : "")));
      if (c.others.length) {
        const other = (o) => `${o.feature} (${o.level.replaceAll("_", " ")}` +
          (o.state === "acknowledged" ? `, acknowledged${o.acknowledged_by ? " by " + o.acknowledged_by : ""})` : ")");
        bodyDiv.append(el("div", { class: "others" }, "Also: " + c.others.map(other).join(", ")));
      }
    }
    if (c.last_action) {
      bodyDiv.append(el("div", { class: "did" }, `Last action: ${c.last_action.user}, ${time(c.last_action.time)}: ${c.last_action.text}`));
    }
    return el("article", { class: `card light-${c.light}`, "data-machine": c.machine, "data-light": c.light,
                           "aria-label": `${c.machine}: ${c.word}` }, head, bodyDiv);
  }

  return { el, seg, query, api, act, token, tokenField, notice, answer, settled, debounce, live, fill, num, time, badge, sourceProblems, featureHref, machineHref,
           alertRow, card, data: body.dataset };
})();
