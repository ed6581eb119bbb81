// The cell page: the shop-floor cards (one per machine), then every machine with its connection,
// program, counters and open conditions.
"use strict";
(() => {
  const { el, api, badge, sourceProblems, time, machineHref, alertRow, fill, debounce, live, notice, card } = M;
  const floor = document.getElementById("floor");
  const machines = document.querySelector("#machines tbody");
  const openAlerts = document.querySelector("#open-alerts tbody");
  const config = document.querySelector("#config");

  function showConfig(c) {
    if (!c) return;
    const files = Object.entries(c.files || {}).map(([f, h]) => `${f.split("/").pop()}@${h}`).join(", ");
    let text = `Configuration loaded ${time(c.loaded_at)} from ${files}.`;
    const r = c.last_reload;
    if (r && !r.ok) text += ` Last reload (${time(r.at)}) refused: ${(r.errors || []).join("; ")}`;
    config.textContent = text;
    config.classList.toggle("error", Boolean(r && !r.ok));
  }

  function machineRow(m) {
    const conn = el("td", {}, badge(m.connection, "conn-" + m.connection));
    if (m.signal_lost) conn.append(" ", el("span", { class: "badge lost", title: "signal lost" }, "⚠ signal lost"));
    conn.append(...sourceProblems(m));
    const counts = el("td", { class: "alert-counts" });
    for (const sev of ["critical", "warning", "watch"]) {  // by severity (out of tolerance counts as critical)
      const n = m.open_alerts[sev] || 0;
      if (n) counts.append(el("span", { class: "badge " + sev, "data-severity": sev }, `${n} ${sev}`), " ");
    }
    if (!counts.childNodes.length) counts.append(el("span", { class: "muted" }, "none"));
    return el("tr", { "data-machine": m.machine },
      el("td", {}, el("a", { href: machineHref(m.machine) }, m.machine)),
      conn,
      el("td", { class: "program" }, m.program || "–"),
      el("td", { class: "num" }, m.counter ?? "–"),
      el("td", { class: "num parts" }, m.parts,
        m.not_observed ? el("span", { class: "badge not_observed", title: "counted by the controller, data lost" },
          ` ${m.not_observed} not observed`) : ""),
      counts,
      el("td", {}, time(m.last_part_end)));
  }

  async function refresh() {
    try {
      const [fl, ms, al, st] = await Promise.all([
        api("/api/floor"), api("/api/machines"), api("/api/alerts?state=active&last=50"), api("/api/status")]);
      floor.replaceChildren(...fl.machines.map((c) => card(c, soon)));
      fill(machines, ms.machines.map(machineRow));
      showConfig(st.config);
      fill(openAlerts, al.alerts.map((a) => alertRow(a)), 50);
      M.settled();
    } catch (e) {
      notice("Cannot reach the monitor: " + e.message, "error");
    }
  }

  const soon = debounce(refresh, 500);
  M.tokenField(document.getElementById("token"), document.getElementById("whoami"), soon);
  refresh();
  live({ part: soon, alert: soon, machine: soon, config: soon });
  setInterval(soon, 10000);  // connection and program changes that end no part
})();
