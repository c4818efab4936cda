// The data map's page: one Plotly scatter of the rows, coloured by a field, with search,
// details, keep/drop marks and their export. The rows come from the JSON in #map-data.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const plot = document.getElementById("plot");
  const $ = (id) => document.getElementById(id);
  const n = data.n;
  const marks = new Map(); // row -> "keep" | "drop"
  let selected = []; // rows
  let shown = []; // per trace: its rows, in point order

  const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  function wrap(text, width, lines) {
    const out = [];
    let line = "";
    for (const word of text.replace(/\s+/g, " ").trim().split(" ")) {
      if (line && line.length + word.length + 1 > width) {
        out.push(line);
        line = "";
        if (out.length === lines) break;
      }
      line = line ? line + " " + word : word.slice(0, width);
    }
    if (line && out.length < lines) out.push(line);
    return out.map(esc).join("<br>");
  }
  const field = (name, i) => data.fields[name].names[data.fields[name].codes[i]];
  const hover = Array.from({ length: n }, (_, i) =>
    "<b>" + esc(field("source", i)) + "</b> · " + esc(field("cluster", i)) +
    (data.fields.rule.codes[i] ? " · <b>" + esc(field("rule", i)) + "</b>" : "") +
    "<br>" + wrap(data.prompt[i], 80, 4) + "<br><i>" + wrap(data.answer[i], 80, 3) + "</i>");
  const haystack = Array.from({ length: n }, (_, i) =>
    (data.id[i] + "\n" + data.prompt[i] + "\n" + data.answer[i]).toLowerCase());

  function codesOf(name) {
    if (name !== "status") return data.fields[name];
    const base = data.fields.status; // names: kept, dropped, marked keep, marked drop
    const codes = base.codes.map((c, i) => (marks.has(i) ? (marks.get(i) === "keep" ? 2 : 3) : c));
    return { names: base.names, colours: base.colours, codes };
  }

  function traces(name) {
    const f = codesOf(name);
    const rows = f.names.map(() => []);
    for (let i = 0; i < n; i++) rows[f.codes[i]].push(i);
    shown = [];
    const out = [];
    rows.forEach((members, c) => {
      if (!members.length) return;
      shown.push(members);
      out.push({
        type: data.webgl ? "scattergl" : "scatter",
        mode: "markers",
        name: f.names[c] + " (" + members.length + ")",
        x: members.map((i) => data.x[i]),
        y: members.map((i) => data.y[i]),
        text: members.map((i) => hover[i]),
        hovertemplate: "%{text}<extra></extra>",
        marker: { size: data.pointSize, color: f.colours[c], opacity: 0.85 },
        unselected: { marker: { opacity: 0.12 } },
      });
    });
    return out;
  }

  function annotations(name) {
    if (name !== "cluster") return [];
    return data.centres.map(([x, y, label]) => ({
      x, y, text: esc(label), showarrow: false, font: { size: 11, color: "#1d2430" },
      bgcolor: "rgba(255,255,255,0.7)",
    }));
  }

  function draw() {
    const name = $("colour").value;
    const layout = {
      dragmode: plot.layout ? plot.layout.dragmode : "lasso",
      hovermode: "closest",
      uirevision: "map",
      margin: { l: 8, r: 8, t: 8, b: 8 },
      xaxis: { visible: false },
      yaxis: { visible: false, scaleanchor: "x" },
      legend: { itemsizing: "constant", title: { text: $("colour").selectedOptions[0].text } },
      annotations: annotations(name),
    };
    const config = { displaylogo: false, responsive: true, scrollZoom: true };
    return Plotly.react(plot, traces(name), layout, config).then(() => select(selected));
  }

  // Selection: Plotly's lasso/box, a search, or a duplicate group; always a list of rows.
  function select(rows) {
    selected = rows;
    const chosen = new Set(rows);
    const points = shown.map((members) =>
      rows.length ? members.flatMap((i, k) => (chosen.has(i) ? [k] : [])) : null);
    updateCounts();
    return Plotly.restyle(plot, { selectedpoints: points });
  }
  function onSelected(event) {
    if (!event || !event.points) return;
    selected = event.points.map((p) => shown[p.curveNumber][p.pointIndex]);
    updateCounts();
  }

  function updateCounts() {
    $("counts").textContent = selected.length ? selected.length + " selected" : "";
    let keep = 0;
    for (const m of marks.values()) if (m === "keep") keep++;
    $("marks").textContent = marks.size
      ? keep + " marked keep, " + (marks.size - keep) + " marked drop" : "";
  }

  function mark(how) {
    for (const i of selected) {
      if (how) marks.set(i, how);
      else marks.delete(i);
    }
    updateCounts();
    if ($("colour").value === "status") draw();
  }

  function keepDrop() {
    const list = { keep: new Set(), drop: new Set() };
    for (const [i, how] of marks) list[how].add(data.id[i]);
    return { keep: [...list.keep].sort(), drop: [...list.drop].sort() };
  }

  function exportList() {
    const blob = new Blob([JSON.stringify(keepDrop(), null, 1) + "\n"], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = data.exportName;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  function search(query) {
    const q = query.trim().toLowerCase();
    if (!q) return select([]);
    const rows = [];
    for (let i = 0; i < n; i++) if (haystack[i].includes(q)) rows.push(i);
    return select(rows);
  }

  function details(i) {
    const group = data.group[i];
    const members = group < 0 ? [] : data.groups[group];
    const dd = (label, value) => "<dt>" + label + "</dt><dd>" + esc(String(value)) + "</dd>";
    $("details").innerHTML =
      "<h2>Row " + esc(data.id[i]) + "</h2><dl>" +
      dd("source", field("source", i)) + dd("cluster", field("cluster", i)) +
      dd("curation", field("rule", i) + (data.detail[i] ? " (" + data.detail[i] + ")" : "")) +
      (members.length ? dd("duplicates", members.length + " rows in group " + group) : "") +
      "</dl><h2>Prompt</h2><pre>" + esc(data.prompt[i]) + "</pre>" +
      "<h2>Answer</h2><pre>" + esc(data.answer[i]) + "</pre>";
    if (members.length) select(members);
  }

  document.title = data.title;
  $("title").textContent = data.title;
  $("summary").textContent = data.summary;
  $("colour").addEventListener("change", draw);
  $("search").addEventListener("input", (e) => search(e.target.value));
  $("keep").addEventListener("click", () => mark("keep"));
  $("drop").addEventListener("click", () => mark("drop"));
  $("unmark").addEventListener("click", () => mark(null));
  $("export").addEventListener("click", exportList);
  draw().then(() => {
    plot.on("plotly_selected", onSelected);
    plot.on("plotly_deselect", () => { selected = []; updateCounts(); });
    plot.on("plotly_click", (e) => details(shown[e.points[0].curveNumber][e.points[0].pointIndex]));
    document.body.dataset.ready = "1";
  });
  window.datamap = { data, keepDrop, selected: () => selected, shown: () => shown, search, select };
})();
