// A machine: its shop-floor card (the one action to take), its state, the programs it ran (with
// links to each feature), what people did, and its recent parts (a bad part is red, never green).
"use strict";
(() => {
  const { el, api, seg, badge, time, num, featureHref, debounce, live, notice, query, card } = M;
  const machine = M.data.machine;
  const floor = document.getElementById("floor");
  const facts = document.getElementById("machine-facts");
  const programs = document.getElementById("programs");
  const parts = document.querySelector("#parts tbody");
  const actions = document.querySelector("#actions tbody");
  const MAX_ROWS = 200;
  let probeTools = [];

  function fact(label, value) { return el("div", { class: "fact" }, el("span", { class: "label" }, label), el("span", {}, value)); }

  function partRow(p) {
    const badFeatures = Object.keys(p.out_of_tolerance || {});
    const bad = { size: badFeatures.length };
    const badSignals = new Set(Object.values(p.out_of_tolerance || {}).flat());
    const values = el("td", { class: "mono" });
    for (const [k, v] of Object.entries(p.measurements || {})) {
      const text = `${k.replace(/^probe\./, "")}=${num(v)}`;
      values.append(badSignals.has(k) ? el("span", { class: "bad-value" }, text) : text, "  ");
    }
    // a part that is not complete says why (for one not observed: the gap, when and why)
    if (p.status !== "complete") for (const note of p.notes || []) values.append(note, "  ");
    const status = bad.size ? badge("out of tolerance: " + badFeatures.join(", "), "bad") : badge(p.status.replace("_", " "), p.status);
    return el("tr", { "data-key": p.key, "data-status": p.status, "data-bad": bad.size ? "1" : null, class: bad.size ? "bad" : null },
      el("td", { class: "num" }, p.part), el("td", { class: "program" }, p.program), el("td", { class: "status" }, status),
      el("td", {}, time(p.end)), el("td", { class: "tool" }, p.tool ?? "–"), el("td", { class: "num" }, num(p.tool_life, 1)),
      el("td", { class: "num" }, num(p.mean_load, 1)), values);
  }

  function actionRow(a) {
    return el("tr", { "data-action-id": a.id, "data-kind": a.kind },
      el("td", {}, time(a.time)), el("td", {}, `${a.user} (${a.role})`), el("td", {}, a.feature), el("td", {}, a.text));
  }

  async function refreshMachine() {
    try {
      const [m, fl, ac] = await Promise.all([api("/api/machines/" + seg(machine)), api("/api/floor" + query({ machine })),
        api("/api/actions" + query({ machine, last: 20 }))]);
      floor.replaceChildren(...fl.machines.map((c) => card(c, soon)));
      probeTools = (m.probe_tools || []).map(String);
      const conn = el("span", {}, badge(m.connection, "conn-" + m.connection));
      if (m.signal_lost) conn.append(" ", el("span", { class: "badge lost" }, "⚠ signal lost"));
      conn.append(...M.sourceProblems(m));
      const open = ["critical", "warning", "watch"].map((s) => `${m.open_alerts[s] || 0} ${s}`).join(", ");
      facts.replaceChildren(fact("Connection", conn), fact("Kind", m.kind || "–"), fact("Program", m.program || "–"),
        fact("Counter", m.counter ?? "–"), fact("Parts", m.parts),
        fact("Not observed", m.not_observed ? el("span", { class: "badge not_observed" }, String(m.not_observed)) : "0"),
        fact("Open conditions", open),
        fact("Last part", time(m.last_part_end)));
      programs.replaceChildren(...m.programs.map((p) => el("li", {},
        el("span", { class: "program" }, p.program), ` (${p.parts} parts): `,
        ...p.features.flatMap((f, i) => [i ? ", " : "", el("a", { href: featureHref(machine, p.program, f) }, f)]))));
      actions.replaceChildren(...ac.actions.map(actionRow));
      if (!ac.actions.length) actions.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "Nothing recorded yet.")));
      M.settled();
    } catch (e) { notice("Cannot reach the monitor: " + e.message, "error"); }
  }

  async function refreshParts() {
    const body = await api("/api/parts" + query({ machine, last: 50 }));
    parts.replaceChildren(...body.parts.slice().reverse().map(partRow));
  }

  function onPart(p) {
    if (p.machine !== machine) return;
    // the event carries the codec's part dict; show it with the same fields as /api/parts
    const probes = new Set(probeTools);  // the probe is not a cutting tool
    const last = (p.tools || []).filter((t) => !probes.has(String(t.tool))).slice(-1)[0];
    parts.prepend(partRow({ key: p.key, part: p.part_number, program: p.program, status: p.status, end: p.end,
      tool: last ? last.tool : null, tool_life: last ? last.life_end : null, mean_load: p.spindle && p.spindle.mean_load,
      measurements: p.measurements, notes: p.notes, out_of_tolerance: p.out_of_tolerance }));
    while (parts.rows.length > MAX_ROWS) parts.deleteRow(-1);
    soon();
  }

  const soon = debounce(refreshMachine, 1000);
  M.tokenField(document.getElementById("token"), null, soon);
  refreshMachine();
  refreshParts().catch((e) => notice("Cannot read parts: " + e.message, "error"));
  live({ part: onPart, alert: (a) => { if (a.machine === machine) soon(); }, machine: soon, action: soon });
  setInterval(soon, 10000);  // connection and program changes that end no part
})();
