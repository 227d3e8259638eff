// Headwater's pages: charts (ECharts), the chain graph (dagre layout drawn by ECharts),
// the timeline, and live logs (server-sent events). Data comes in <script type=
// "application/json"> blocks; text always goes through textContent, never innerHTML.
(function () {
  "use strict";
  const COLORS = {completed: "#1a7f37", failed: "#cf222e", cancelled: "#9a6700",
    cancelling: "#9a6700", running: "#0969da", starting: "#0969da", pending: "#54aeff",
    skipped: "#8c959f"};
  function data(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  function durationChart() {
    const el = document.getElementById("durations");
    const runs = data("durations-data");
    if (!el || !runs || !window.echarts) return;
    const chart = echarts.init(el);
    chart.setOption({animation: false,
      tooltip: {trigger: "item", formatter: (p) => `#${p.data.number} ${p.data.status}<br>${p.data.value[1]} s`},
      xAxis: {type: "time"}, yAxis: {type: "value", name: "seconds"},
      grid: {left: 50, right: 20, top: 30, bottom: 30},
      series: [{type: "bar", barMaxWidth: 14, data: runs.map((r) => ({
        value: [r.at, r.seconds], number: r.number, status: r.status, id: r.id,
        itemStyle: {color: COLORS[r.status] || "#8c959f"}}))}],
    });
    chart.on("click", (p) => { if (p.data && p.data.id) location.href = runHref(p.data.id); });
    window.addEventListener("resize", () => chart.resize());
  }
  function runHref(id) { return location.pathname.replace(/\/(jobs|runs|timeline).*$/, "") + "/runs/" + id; }
  function chainGraph() {
    const el = document.getElementById("graph");
    const g = data("graph-data");
    if (!el || !g || !window.echarts || !window.dagre) return;
    const layout = new dagre.graphlib.Graph();
    layout.setGraph({rankdir: "LR", nodesep: 30, ranksep: 80});
    layout.setDefaultEdgeLabel(() => ({}));
    g.nodes.forEach((n) => layout.setNode(n.id, {width: Math.max(120, n.label.length * 7), height: 34}));
    g.edges.forEach((e) => layout.setEdge(e.source, e.target));
    dagre.layout(layout);
    const chart = echarts.init(el);
    chart.setOption({animation: false,
      series: [{type: "graph", layout: "none", roam: true, symbol: "roundRect",
        label: {show: true, color: "#fff", formatter: (p) => p.data.label},
        edgeSymbol: ["none", "arrow"], edgeSymbolSize: 9,
        lineStyle: {color: "#8c959f", width: 1.5},
        edgeLabel: {show: true, formatter: (p) => p.data.kind, fontSize: 10, color: "#6e7781"},
        data: g.nodes.map((n) => {
          const pos = layout.node(n.id);
          return {name: n.id, label: n.label, href: n.href, x: pos.x, y: pos.y,
            symbolSize: [pos.width, pos.height],
            itemStyle: {color: n.current ? "#1f6feb" : (COLORS[n.status] || "#57606a")}};
        }),
        links: g.edges.map((e) => ({source: e.source, target: e.target, kind: e.kind}))}],
    });
    chart.on("click", (p) => { if (p.dataType === "node" && p.data.href) location.href = p.data.href; });
  }
  function timeline() {
    const el = document.getElementById("gantt");
    const t = data("gantt-data");
    if (!el || !t || !window.echarts) return;
    // rows: [job, number, status, created, started, finished, id]: job and status index
    // t.jobs and t.statuses, times are milliseconds after t.start (null: not yet)
    const jobs = t.jobs;
    const at = (ms) => (ms === null ? null : t.start + ms);
    const bars = [];
    t.runs.forEach((r) => {
      const status = t.statuses[r[2]], created = at(r[3]), started = at(r[4]);
      bars.push({job: r[0], number: r[1], status: status, from: created, to: started || t.end, id: r[6], queued: true});
      if (started) bars.push({job: r[0], number: r[1], status: status, from: started, to: at(r[5]) || t.end, id: r[6], queued: false});
    });
    // open on the span that holds runs (at least ten minutes); the slider reaches the rest
    const first = t.runs.reduce((m, r) => Math.min(m, at(r[3])), t.end);
    const from = Math.max(t.start, Math.min(first, t.end - 600e3) - 30e3);
    // past ROWS jobs their names would overlap: a slider on the right scrolls the rows
    const ROWS = 30, many = jobs.length > ROWS;
    const chart = echarts.init(el);
    chart.setOption({animation: false,
      tooltip: {formatter: (p) => `${jobs[p.data.job]} #${p.data.number} ${p.data.status}`},
      grid: {left: 220, right: many ? 40 : 20, top: 20, bottom: 70},
      xAxis: {type: "time", min: t.start, max: t.end},
      yAxis: {type: "category", data: jobs, inverse: true, axisLabel: {width: 200, overflow: "truncate"}},
      dataZoom: [{type: "inside", startValue: from, endValue: t.end},
        {type: "slider", height: 18, bottom: 10, startValue: from, endValue: t.end}].concat(many
        ? [{type: "slider", yAxisIndex: 0, width: 14, right: 8, top: 20, bottom: 70,
          startValue: 0, endValue: ROWS - 1, showDetail: false, filterMode: "weakFilter"}]
        : []),
      series: [{type: "custom", encode: {x: [1, 2], y: 0},
        renderItem: (params, api) => {
          const y = api.value(0), a = api.coord([api.value(1), y]), b = api.coord([api.value(2), y]);
          const h = api.size([0, 1])[1] * 0.6;
          return {type: "rect", shape: {x: a[0], y: a[1] - h / 2, width: Math.max(2, b[0] - a[0]), height: h},
            style: api.style({fill: api.visual("color")})};
        },
        data: bars.map((b) => ({value: [b.job, b.from, b.to], job: b.job,
          number: b.number, status: b.status, id: b.id,
          itemStyle: {color: COLORS[b.status] || "#8c959f", opacity: b.queued ? 0.35 : 1}}))}],
    });
    chart.on("click", (p) => { if (p.data && p.data.id) location.href = runHref(p.data.id); });
  }
  function line(box, l, q) {
    const div = document.createElement("div");
    div.className = l.source;
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = String(l.line_num + 1).padStart(5, " ");
    div.appendChild(n);
    const text = l.content;
    if (q && text.toLowerCase().includes(q)) {
      const i = text.toLowerCase().indexOf(q);
      div.appendChild(document.createTextNode(text.slice(0, i)));
      const m = document.createElement("mark");
      m.textContent = text.slice(i, i + q.length);
      div.appendChild(m);
      div.appendChild(document.createTextNode(text.slice(i + q.length)));
    } else {
      div.appendChild(document.createTextNode(text));
    }
    box.appendChild(div);
  }
  function logs() {
    const box = document.getElementById("log");
    if (!box) return;
    const initial = data("log-data") || [];
    const q = (box.dataset.q || "").toLowerCase();
    initial.forEach((l) => line(box, l, q));
    if (!box.dataset.stream) return;
    let last = initial.length ? initial[initial.length - 1].line_num : -1;
    const source = new EventSource(box.dataset.stream + "?after=" + last);
    source.addEventListener("log", (ev) => {
      const l = JSON.parse(ev.data);
      if (l.line_num <= last) return;
      last = l.line_num;
      const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
      line(box, l, q);
      if (stick) box.scrollTop = box.scrollHeight;
    });
    source.addEventListener("end", () => { source.close(); setTimeout(() => location.reload(), 300); });
    source.onerror = () => { source.close(); };
  }
  document.addEventListener("DOMContentLoaded", () => { durationChart(); chainGraph(); timeline(); logs(); });
})();
