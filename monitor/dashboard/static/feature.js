// One feature of one program on one machine: measurements by part number with the tolerance band,
// nominal, control limits, the trend forecast and its 90% cone, alert markers; evidence and
// capability beneath. Redrawn (Plotly.react, same number of traces) when a part of this machine
// and program arrives: the page holds only the latest answer, never a growing history.
"use strict";
(() => {
  const { el, api, seg, num, badge, time, alertRow, debounce, live, notice } = M;
  const { machine, program, feature } = M.data;
  const chart = document.getElementById("chart");
  const SEV_COLOR = { critical: "#c62828", warning: "#ef6c00", watch: "#f9a825" };

  function hline(y, color, dash, name) {
    return { type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y, line: { color, width: 1.5, dash }, name };
  }

  function draw(f) {
    const xs = f.values.map((v) => v.part_number);
    const ys = f.values.map((v) => v.value);
    const lim = f.limits || {};
    const shapes = [];
    const annotations = [];
    const lower = lim.kind === "position" ? 0 : lim.lower;
    const upper = lim.upper;
    if (lower !== null && lower !== undefined && upper !== null && upper !== undefined) {
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: lower, y1: upper, fillcolor: "rgba(76,175,80,0.10)",
        line: { width: 0 }, layer: "below" });
    }
    if (lim.kind === "size") {
      shapes.push(hline(lim.lower, "#c62828", "solid"), hline(lim.upper, "#c62828", "solid"));
      annotations.push({ xref: "paper", x: 1, y: lim.upper, text: "USL", showarrow: false, xanchor: "left" },
                       { xref: "paper", x: 1, y: lim.lower, text: "LSL", showarrow: false, xanchor: "left" });
    } else if (upper !== undefined) {
      shapes.push(hline(upper, "#c62828", "solid"));
      annotations.push({ xref: "paper", x: 1, y: upper, text: "TP tol", showarrow: false, xanchor: "left" });
    }
    if (f.nominal !== null && f.nominal !== undefined) {
      shapes.push(hline(f.nominal, "#2e7d32", "dash"));
      annotations.push({ xref: "paper", x: 1, y: f.nominal, text: "nominal", showarrow: false, xanchor: "left" });
    }
    const cl = f.control_limits;
    if (f.kind === "size" && cl && cl.armed && cl.individuals) {
      shapes.push(hline(cl.individuals[0], "#6a1b9a", "dot"), hline(cl.individuals[1], "#6a1b9a", "dot"));
      annotations.push({ xref: "paper", x: 1, y: cl.individuals[1], text: "UCL", showarrow: false, xanchor: "left" },
                       { xref: "paper", x: 1, y: cl.individuals[0], text: "LCL", showarrow: false, xanchor: "left" });
    }
    const traces = [{
      type: "scatter", mode: "lines+markers", name: "measured", x: xs, y: ys,
      line: { color: "#1565c0", width: 1 }, marker: { size: 5 },
      hovertemplate: "part %{x}<br>%{y:.4f} mm<extra></extra>",
    }];
    const fc = f.forecast;
    const fx = fc ? fc.parts : [];
    traces.push({ type: "scatter", mode: "lines", name: "forecast 90% interval", x: fx, y: fc ? fc.lo : [],
                  line: { width: 0 }, hoverinfo: "skip", showlegend: false });
    traces.push({ type: "scatter", mode: "lines", name: "forecast 90% interval", x: fx, y: fc ? fc.hi : [],
                  fill: "tonexty", fillcolor: "rgba(255,152,0,0.20)", line: { width: 0 }, hoverinfo: "skip" });
    traces.push({ type: "scatter", mode: "lines", name: "trend forecast", x: fx, y: fc ? fc.mean : [],
                  line: { color: "#ef6c00", dash: "dash", width: 2 } });
    const now = f.evidence && f.evidence.state !== "closed" ? f.evidence : null;
    if (now && now.condition === "out_of_tolerance") {  // already out: no forecast of a breach that happened
      annotations.push({ xref: "paper", yref: "paper", x: 0, y: 1, text: `out of tolerance (condition since part ${now.part_number})`,
                         showarrow: false, xanchor: "left", yanchor: "bottom", font: { color: "#b71c1c" } });
    } else if (fc && fc.breach_part && fc.breach_part <= fx[fx.length - 1]) {  // within the forecast horizon
      shapes.push({ type: "line", yref: "paper", y0: 0, y1: 1, x0: fc.breach_part, x1: fc.breach_part,
                    line: { color: "#c62828", dash: "dot", width: 1 } });
      annotations.push({ yref: "paper", y: 1, x: fc.breach_part, text: `breach ~part ${Math.round(fc.breach_part)}`,
                         showarrow: false, yanchor: "bottom" });
    }
    const bad = f.values.filter((v) => (lower !== null && lower !== undefined && v.value < lower) ||
                                       (upper !== null && upper !== undefined && v.value > upper));
    traces.push({  // out-of-tolerance parts are red on every chart and table
      type: "scatter", mode: "markers", name: "out of tolerance", x: bad.map((v) => v.part_number), y: bad.map((v) => v.value),
      marker: { symbol: "x", size: 11, color: "#b71c1c" }, hovertemplate: "part %{x} out of tolerance<br>%{y:.4f} mm<extra></extra>",
    });
    const byPart = new Map(f.values.map((v) => [v.part_number, v.value]));
    const marks = f.alerts.filter((a) => byPart.has(a.part_number));
    traces.push({
      type: "scatter", mode: "markers", name: "alerts", x: marks.map((a) => a.part_number),
      y: marks.map((a) => byPart.get(a.part_number)),
      marker: { symbol: "triangle-up", size: 13, color: marks.map((a) => SEV_COLOR[a.severity] || "#555"),
                line: { color: "#000", width: 1 } },
      // plotly renders hover text as (sanitised) HTML; escape anyway so a message stays text
      text: marks.map((a) => `${a.severity} ${a.kind}: ${a.message}`.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)),
      hovertemplate: "%{text}<extra></extra>",
    });
    const layout = {
      margin: { l: 70, r: 60, t: 20, b: 45 }, height: 430, shapes, annotations,
      xaxis: { title: { text: "part number" }, zeroline: false },
      yaxis: { title: { text: f.kind === "position" ? "true position (mm)" : "size (mm)" }, tickformat: ".4f", zeroline: false },
      legend: { orientation: "h", y: -0.18 }, uirevision: "keep",
    };
    Plotly.react(chart, traces, layout, { displaylogo: false, responsive: true });
    chart.dataset.points = String(xs.length);
    document.getElementById("chart-summary").textContent = summary(f, bad, now);
    document.getElementById("chart-note").textContent =
      `${xs.length} parts plotted` + (f.total_parts > xs.length ? ` of ${f.total_parts} stored` : "") +
      (fc ? `; forecast over ${fc.parts.length} parts, ${Math.round((fc.interval || 0.9) * 100)}% interval` : "");
  }

  /** The chart in words, for a screen reader (and anyone who cannot see the colours). */
  function summary(f, bad, now) {
    const n = f.values.length;
    if (!n) return `${feature}: no parts measured yet.`;
    const lim = f.limits || {};
    const last = f.values[n - 1];
    const unit = f.kind === "position" ? "mm true position" : "mm";
    const limits = lim.kind === "size"
      ? `nominal ${num(f.nominal)}, lower limit ${num(lim.lower)}, upper limit ${num(lim.upper)}`
      : `tolerance ${num(lim.upper)}`;
    let text = `${feature}: ${n} parts plotted, last part ${last.part_number} measured ${num(last.value)} ${unit} (${limits}); `;
    text += bad.length
      ? `${bad.length} out of tolerance (parts ${bad.slice(0, 12).map((v) => v.part_number).join(", ")}${bad.length > 12 ? ", ..." : ""}). `
      : "none out of tolerance. ";
    if (now) text += `Condition: ${(now.condition || now.severity).replaceAll("_", " ")} since part ${now.part_number}. `;
    else text += "Condition: ok. ";
    const fc = f.forecast;
    if (fc && fc.parts && fc.parts.length) {
      text += `Trend forecast to part ${fc.parts[fc.parts.length - 1]}: ${num(fc.mean[fc.mean.length - 1])} mm`;
      text += fc.breach_part && (!now || now.condition !== "out_of_tolerance") ? `, limit reached near part ${Math.round(fc.breach_part)}.` : ".";
    }
    return text;
  }

  const AXIS_COLOR = { x: "#1565c0", y: "#6a1b9a", z: "#00838f" };

  /** Position features: each axis's deviation from nominal against +-tolerance/2, with its
   *  individuals control limits and its own forecast cone. */
  function drawAxes(f) {
    const section = document.getElementById("axes-section");
    if (f.kind !== "position" || !f.values.length) { section.hidden = true; return; }
    section.hidden = false;
    const names = Object.keys(f.values[0].axes || {});
    const half = (f.limits && f.limits.tolerance) ? f.limits.tolerance / 2 : null;
    const shapes = [];
    if (half !== null) {
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: -half, y1: half, fillcolor: "rgba(76,175,80,0.10)",
                    line: { width: 0 }, layer: "below" }, hline(-half, "#c62828", "solid"), hline(half, "#c62828", "solid"));
    }
    shapes.push(hline(0, "#2e7d32", "dash"));
    const traces = [];
    for (const a of names) {
      const color = AXIS_COLOR[a] || "#444";
      traces.push({ type: "scatter", mode: "lines+markers", name: a.toUpperCase(), x: f.values.map((v) => v.part_number),
                    y: f.values.map((v) => v.axes[a]), line: { color, width: 1 }, marker: { size: 4 } });
      const cl = f.control_limits && f.control_limits[a];
      if (cl && cl.armed && cl.individuals) {
        shapes.push(hline(cl.individuals[0], color, "dot"), hline(cl.individuals[1], color, "dot"));
      }
      const fa = f.forecast && f.forecast.axes && f.forecast.axes[a];
      if (fa) {
        const fx = f.forecast.parts;
        traces.push({ type: "scatter", mode: "lines", x: fx, y: fa.lo, line: { width: 0 }, hoverinfo: "skip", showlegend: false },
                    { type: "scatter", mode: "lines", x: fx, y: fa.hi, fill: "tonexty", fillcolor: "rgba(255,152,0,0.15)",
                      line: { width: 0 }, hoverinfo: "skip", showlegend: false },
                    { type: "scatter", mode: "lines", name: `${a.toUpperCase()} forecast`, x: fx, y: fa.mean,
                      line: { color, dash: "dash", width: 2 } });
      }
    }
    Plotly.react(document.getElementById("axes-chart"), traces, {
      margin: { l: 70, r: 60, t: 10, b: 45 }, height: 320, shapes, uirevision: "keep",
      xaxis: { title: { text: "part number" }, zeroline: false },
      yaxis: { title: { text: "deviation (mm)" }, tickformat: ".4f", zeroline: false },
      legend: { orientation: "h", y: -0.25 },
    }, { displaylogo: false, responsive: true });
  }

  function evidence(f) {
    const box = document.getElementById("evidence");
    const a = f.evidence;
    if (!a) { box.replaceChildren(el("p", { class: "muted" }, "No condition on this feature: it is ok.")); return; }
    const ev = a.evidence || {};
    const advice = ev.advice || {};
    const dl = el("dl", { class: "evidence" });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {}, k), el("dd", {}, v)); };
    const span = a.last_part !== null && a.last_part !== undefined && a.last_part !== a.part_number
      ? `parts ${a.part_number}–${a.last_part}` : `part ${a.part_number}`;
    const level = a.condition || a.severity;
    add("Condition", el("span", {}, badge(level.replaceAll("_", " "), level), " ", badge(a.state), " ", span));
    add("What to do now", advice.action);
    const offsets = Array.isArray(advice.offsets) ? advice.offsets : [];
    if (offsets.length) {
      add("Offset now", offsets.map((o) => {
        const c = Number(o.change_mm);
        return `${o.label} ${c >= 0 ? "+" : ""}${c.toFixed(4)} mm`;
      }).join(", "));
    }
    if (level === "out_of_tolerance") {
      add("Parts left", "none: the last part is out of tolerance");
    } else if (advice.parts_left !== undefined && advice.parts_left !== null) {
      const iv = advice.first_out_interval
        ? `; first bad part ${Math.round(advice.first_out_interval[0])}–${advice.first_out_interval[1] === null ? "…" : Math.round(advice.first_out_interval[1])} (90%)`
        : "";
      add("Parts left", `~${Math.round(advice.parts_left)}${iv}`);
    }
    add("Message", a.message);
    const signals = Object.entries(ev.signals || {});
    if (signals.length) add("Evidence", signals.map(([k, s]) => `${k} (${s.severity})`).join(", "));
    if (ev.model) add("Model", `${ev.model}` + (ev.model_probability !== undefined && ev.model_probability !== null
      ? ` (${Math.round(ev.model_probability * 100)}% likely)` : ""));
    if (ev.slope_mm_per_part !== undefined) add("Drift", `${(ev.slope_mm_per_part * 1000).toFixed(2)} µm/part`);
    if (ev.likely_cause) add("Attribution", `${ev.likely_cause}` +
      (ev.correlations && ev.correlations[ev.likely_cause] !== undefined && ev.correlations[ev.likely_cause] !== null
        ? ` (r=${Number(ev.correlations[ev.likely_cause]).toFixed(2)})` : ""));
    if (ev.correlations) {
      const parts = Object.entries(ev.correlations).filter(([, r]) => r !== null && r !== undefined)
        .map(([k, r]) => `${k} r=${Number(r).toFixed(2)}`);
      if (parts.length) add("Correlations", parts.join(", "));
    }
    box.replaceChildren(dl);
  }

  function capability(f) {
    const c = f.capability || {};
    const rows = ["cp", "cpk", "pp", "ppk"].map((k) => {
      const ci = c[k + "_ci"];
      return el("tr", { "data-index": k }, el("td", {}, k.charAt(0).toUpperCase() + k.slice(1)),
        el("td", { class: "num" }, num(c[k], 2)),
        el("td", { class: "num" }, ci ? `${num(ci[0], 2)} – ${num(ci[1], 2)}` : "–"));
    });
    document.querySelector("#capability tbody").replaceChildren(...rows);
    // the same numbers as the report and `monitor parts --capability`; unstable: not meaningful
    const signals = c.signals || [];
    document.getElementById("capability-note").textContent =
      `${c.n ?? 0} complete parts` + (f.kind === "position" ? " (true position: no Cp or Pp)" : "") +
      (signals.length ? `; process not stable, indices not meaningful: ${signals.join("; ")}` : "");
  }

  // ---- every measurement source of the feature, part by part (probe, CMM, gauge) -------------
  const SOURCE_COLOR = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f"];
  const DISPOSITIONS = [["part_quarantined", "quarantined"], ["part_scrapped", "scrapped"],
                        ["part_reworked", "reworked"], ["part_accepted", "accepted on concession"]];
  const ROWS_MAX = 200;

  function dispositionControls(p) {
    const kind = el("select", { "aria-label": `disposition of part ${p.part_number}`, class: "disposition-kind" },
      ...DISPOSITIONS.map(([k, label]) => el("option", { value: k }, label)));
    const reason = el("input", { type: "text", class: "disposition-reason", placeholder: "reason (NCR, concession)",
                                 "aria-label": `reason for part ${p.part_number}` });
    const button = el("button", { type: "button", class: "record-disposition" }, "Record");
    button.addEventListener("click", async () => {
      if (!M.token.get()) { M.answer("Enter your token to record what became of a part.", "error"); return; }
      button.disabled = true;
      try {
        const r = await M.act("/api/actions", { kind: kind.value, machine, program, feature, part_key: p.key,
                                                part_number: p.part_number, reason: reason.value });
        await refresh();
        M.answer(`Part ${p.part_number}: ${r.action.text} (recorded by ${r.action.user})`, "ok");
      } catch (e) { M.answer(`Refused (${e.status || "error"}): ${e.message}`, "error"); }
      finally { button.disabled = false; }
    });
    return el("div", { class: "disposition-form" }, kind, reason, button);
  }

  function drawSources(s) {
    const section = document.getElementById("sources-section");
    const names = s.sources.map((x) => x.source);
    const several = names.length > 1;
    const bad = s.parts.filter((p) => p.out_of_tolerance);
    section.hidden = !several && !bad.length;
    if (section.hidden) return;
    section.dataset.sources = names.join(",");
    document.getElementById("sources-title").textContent = several
      ? `Measurement sources side by side: ${names.join(", ")}` : "Out-of-tolerance parts";
    document.getElementById("bias").replaceChildren(...s.bias.map((b) =>
      el("li", { "data-source": b.source, "data-mean": String(b.mean) }, b.text)));
    const chartBox = document.getElementById("sources-chart");
    chartBox.hidden = !several;
    if (several) {
      const traces = names.map((name, i) => {
        const pts = s.parts.filter((p) => p.values[name]);
        return { type: "scatter", mode: "lines+markers", name, x: pts.map((p) => p.part_number),
                 y: pts.map((p) => p.values[name].value), line: { color: SOURCE_COLOR[i % SOURCE_COLOR.length], width: 1 },
                 marker: { size: 6, color: pts.map((p) => p.values[name].in_tolerance ? SOURCE_COLOR[i % SOURCE_COLOR.length] : "#b71c1c") },
                 hovertemplate: `${name} part %{x}<br>%{y:.4f}<extra></extra>` };
      });
      const limits = [s.limits.lower, s.limits.upper].filter((y) => y !== null && y !== undefined);
      Plotly.react(chartBox, traces, {
        margin: { l: 70, r: 20, t: 10, b: 45 }, height: 300, uirevision: "keep",
        shapes: limits.map((y) => hline(y, "#c62828", "solid")),
        xaxis: { title: { text: "part number" }, zeroline: false },
        yaxis: { title: { text: s.unit === "deg" ? "angle (°)" : "value (mm)" }, tickformat: ".4f", zeroline: false },
        legend: { orientation: "h", y: -0.25 },
      }, { displaylogo: false, responsive: true });
    }
    const head = document.getElementById("sources-head");
    head.replaceChildren(el("th", {}, "Part"), ...names.map((n) => el("th", {}, n)),
      ...(several ? [el("th", {}, "difference (probe − other)")] : []), el("th", {}, "Disposition"));
    const shown = (several ? s.parts : bad).slice().reverse().slice(0, ROWS_MAX);
    const rows = shown.map((p) => {
      const cells = [el("td", { class: "num" }, p.part_number)];
      for (const n of names) {
        const v = p.values[n];
        cells.push(el("td", { class: "num", "data-source": n },
          v ? (s.kind === "attribute" ? (v.in_tolerance ? "pass" : "fail") : el("span", { class: v.in_tolerance ? "" : "bad-value" }, num(v.value))) : "–"));
      }
      if (several) {
        const probe = p.values.probe;
        const diffs = names.filter((n) => n !== "probe" && probe && p.values[n] && s.kind !== "attribute")
          .map((n) => `${n} ${(probe.value - p.values[n].value) >= 0 ? "+" : ""}${num(probe.value - p.values[n].value)}`);
        cells.push(el("td", { class: "num" }, diffs.join(", ") || "–"));
      }
      const done = p.dispositions.map((a) => `${a.text} (${a.user}, ${time(a.time)})`).join("; ");
      const cell = el("td", { class: "disposition" }, done ? el("div", { class: "done" }, done) : (p.out_of_tolerance
        ? el("div", { class: "muted" }, "no disposition recorded") : ""));
      if (p.out_of_tolerance) cell.append(dispositionControls(p));
      cells.push(cell);
      return el("tr", { "data-part": p.part_number, "data-key": p.key, class: p.out_of_tolerance ? "bad" : "" }, ...cells);
    });
    document.querySelector("#sources-table tbody").replaceChildren(...rows);
    document.getElementById("sources-note").textContent =
      `${s.parts.length} of the last ${s.scope} complete parts measured` +
      (several ? `; ${s.sources.map((x) => `${x.source} ${x.n}`).join(", ")}` : "") +
      (shown.length < (several ? s.parts : bad).length ? `; the latest ${shown.length} shown` : "") +
      "; the report (monitor report) has the whole batch.";
  }

  async function refresh() {
    try {
      const f = await api(`/api/features/${seg(machine)}/${seg(program)}/${seg(feature)}`);
      draw(f);
      drawAxes(f);
      evidence(f);
      capability(f);
      drawSources(await api(`/api/features/${seg(machine)}/${seg(program)}/${seg(feature)}/parts`));
      const acts = await api("/api/actions" + M.query({ machine, program, feature, last: 100 }));
      const actRows = acts.actions.map((a) => el("tr", { "data-action-id": a.id, "data-kind": a.kind },
        el("td", {}, time(a.time)), el("td", {}, `${a.user} (${a.role})`), el("td", { class: "num" }, a.part_number ?? "–"),
        el("td", {}, a.text)));
      if (!actRows.length) actRows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "Nothing recorded yet.")));
      document.querySelector("#feature-actions tbody").replaceChildren(...actRows);
      const rows = f.alerts.slice().reverse().slice(0, 100).map((a) => alertRow(a, [], { noMachine: true, noFeature: true, kind: true }));
      document.querySelector("#feature-alerts tbody").replaceChildren(...rows);
      M.settled();
    } catch (e) { notice("Cannot read this feature: " + e.message, "error"); }
  }

  const soon = debounce(refresh, 1000);
  M.tokenField(document.getElementById("token"), document.getElementById("whoami"));
  refresh();
  live({
    part: (p) => { if (p.machine === machine && p.program === program) soon(); },
    alert: (a) => { if (a.machine === machine && a.program === program && a.feature === feature) soon(); },
    action: (a) => { if (a.machine === machine && (a.feature === feature || a.part_key)) soon(); },
  });
})();
