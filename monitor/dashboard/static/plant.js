// The plant page: every cell of the shared store, its machines, owning daemon and health.
"use strict";
(() => {
  const { el, api, badge, machineHref, fill, debounce, live, notice } = M;
  const rows = document.querySelector("#plant tbody");

  function machineRow(thisCell, m) {
    const own = m.cell === thisCell;
    const counts = el("td", { class: "alert-counts" });
    for (const sev of ["critical", "warning", "watch"]) {
      const n = m.open_alerts[sev] || 0;
      if (n) counts.append(el("span", { class: "badge " + sev, "data-severity": sev }, `${n} ${sev}`), " ");
    }
    if (!counts.childNodes.length) counts.append(el("span", { class: "muted" }, "none"));
    const lease = m.live ? badge("live", "conn-connected") : badge("expired", "conn-lost");
    const age = m.heartbeat_age_s === null || m.heartbeat_age_s === undefined ? "" : ` ${Math.round(m.heartbeat_age_s)} s ago`;
    return el("tr", { "data-cell": m.cell, "data-machine": m.machine, "data-live": String(Boolean(m.live)) },
      el("td", {}, m.cell),
      el("td", {}, own ? el("a", { href: machineHref(m.machine) }, m.machine) : m.machine),
      el("td", { class: "owner" }, m.owner || (own ? "this daemon" : "nobody")),
      el("td", {}, lease, age),
      el("td", {}, m.connection ? badge(m.connection, "conn-" + m.connection) : el("span", { class: "muted" }, "–")),
      el("td", { class: "num parts" }, m.parts),
      counts,
      el("td", { class: "muted" }, m.health || ""));
  }

  async function refresh() {
    try {
      const plant = await api("/api/plant");
      fill(rows, plant.cells.flatMap((c) => c.machines.map((m) => machineRow(plant.this_cell, m))));
      M.settled();
    } catch (e) {
      notice("Cannot reach the monitor: " + e.message, "error");
    }
  }

  const soon = debounce(refresh, 500);
  refresh();
  live({ part: soon, alert: soon, machine: soon });
  setInterval(soon, 5000);  // other cells' daemons publish nothing here: their leases and health are polled
})();
