// The alert list: filters, live updates, acknowledge and close (with the site's dashboard token).
"use strict";
(() => {
  const { el, api, seg, query, alertRow, debounce, live, notice } = M;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#alerts tbody");
  const token = document.getElementById("token");
  const MAX_ROWS = 300;
  token.value = sessionStorage.getItem("monitor-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("monitor-token", token.value));

  const params = new URLSearchParams(location.search);
  for (const name of ["machine", "program", "state", "severity"]) {
    if (params.has(name) && form.elements[name]) form.elements[name].value = params.get(name);
  }

  function filters() {
    return { machine: form.elements.machine.value, program: form.elements.program.value,
             state: form.elements.state.value, severity: form.elements.severity.value, last: MAX_ROWS };
  }

  async function act(alert, action) {
    const headers = { Accept: "application/json" };
    if (token.value) headers.Authorization = "Bearer " + token.value;
    try {
      headers["Content-Type"] = "application/json";
      const comment = document.getElementById("comment");
      const body = JSON.stringify({ comment: comment ? comment.value : "" });
      const r = await api(`/api/alerts/${seg(alert.id)}/${action}`, { method: "POST", headers, body });
      if (comment) comment.value = "";
      M.answer(`${action === "ack" ? "Acknowledged" : "Closed"} by ${r.action.user}: ${r.alert.message}`, "ok");
      refresh();
    } catch (e) {
      M.answer(`Refused (${e.status || "error"}): ${e.message}`, "error");
    }
  }

  function row(a) {
    const actions = el("td", { class: "actions" });
    if (a.state === "open") actions.append(el("button", { type: "button", class: "ack" }, "Acknowledge"));
    if (a.state !== "closed") actions.append(el("button", { type: "button", class: "close" }, "Close"));
    for (const b of actions.querySelectorAll("button")) {
      b.addEventListener("click", () => act(a, b.classList.contains("ack") ? "ack" : "close"));
    }
    return alertRow(a, [actions]);
  }

  async function refresh() {
    try {
      const body = await api("/api/alerts" + query(filters()));
      tbody.replaceChildren(...body.alerts.slice(0, MAX_ROWS).map(row));
    } catch (e) { notice("Cannot read alerts: " + e.message, "error"); }
  }

  async function machines() {
    const status = await api("/api/status");
    if (!status.dashboard.writable) {
      token.disabled = true;
      token.placeholder = "read-only: no token set";
    }
    const body = await api("/api/machines");
    const select = form.elements.machine;
    const chosen = params.get("machine") || "";
    for (const m of body.machines) select.append(el("option", { value: m.machine }, m.machine));
    select.value = chosen;
  }

  form.addEventListener("change", (ev) => { if (ev.target !== token) refresh(); });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  const soon = debounce(refresh, 300);
  machines().then(refresh, (e) => notice("Cannot reach the monitor: " + e.message, "error"));
  live({ alert: soon });
})();
