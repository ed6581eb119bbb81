// A machine: its state, the programs it ran (with links to each feature) and its recent parts.
"use strict";
(() => {
  const { el, api, seg, badge, time, num, featureHref, debounce, live, notice, query } = M;
  const machine = M.data.machine;
  const facts = document.getElementById("machine-facts");
  const programs = document.getElementById("programs");
  const parts = document.querySelector("#parts tbody");
  const MAX_ROWS = 200;
  let probeTools = [];

  function fact(label, value) { return el("div", { class: "fact" }, el("span", { class: "label" }, label), el("span", {}, value)); }

  function partRow(p) {
    let values = Object.entries(p.measurements || {})
      .map(([k, v]) => `${k.replace(/^probe\./, "")}=${num(v)}`).join("  ");
    // a part that is not complete says why (for one not observed: the gap, when and why)
    if (p.status !== "complete" && (p.notes || []).length) values = [values, ...p.notes].filter(Boolean).join("  ");
    return el("tr", { "data-key": p.key, "data-status": p.status },
      el("td", { class: "num" }, p.part), el("td", { class: "program" }, p.program),
      el("td", {}, badge(p.status.replace("_", " "), p.status)),
      el("td", {}, time(p.end)), el("td", {}, p.tool ?? "–"), el("td", { class: "num" }, num(p.tool_life, 1)),
      el("td", { class: "num" }, num(p.mean_load, 1)), el("td", { class: "mono" }, values));
  }

  async function refreshMachine() {
    try {
      const m = await api("/api/machines/" + seg(machine));
      probeTools = (m.probe_tools || []).map(String);
      const conn = el("span", {}, badge(m.connection, "conn-" + m.connection));
      if (m.signal_lost) conn.append(" ", el("span", { class: "badge lost" }, "⚠ signal lost"));
      conn.append(...M.sourceProblems(m));
      const open = ["critical", "warning", "watch"].map((s) => `${m.open_alerts[s] || 0} ${s}`).join(", ");
      facts.replaceChildren(fact("Connection", conn), fact("Program", m.program || "–"),
        fact("Counter", m.counter ?? "–"), fact("Parts", m.parts),
      fact("Not observed", m.not_observed ? el("span", { class: "badge not_observed" }, String(m.not_observed)) : "0"),
      fact("Open alerts", open),
        fact("Last part", time(m.last_part_end)));
      programs.replaceChildren(...m.programs.map((p) => el("li", {},
        el("span", { class: "program" }, p.program), ` (${p.parts} parts): `,
        ...p.features.flatMap((f, i) => [i ? ", " : "", el("a", { href: featureHref(machine, p.program, f) }, f)]))));
      notice("");
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
      measurements: p.measurements, notes: p.notes }));
    while (parts.rows.length > MAX_ROWS) parts.deleteRow(-1);
    soon();
  }

  const soon = debounce(refreshMachine, 1000);
  refreshMachine();
  refreshParts().catch((e) => notice("Cannot read parts: " + e.message, "error"));
  live({ part: onPart, alert: (a) => { if (a.machine === machine) soon(); }, machine: soon });
  setInterval(soon, 10000);  // connection and program changes that end no part
})();
