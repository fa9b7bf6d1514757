// Draws the report page from the Report embedded as JSON (`#report`, the shape of
// services/report/src/model.rs): the header, the cards, one section per question with its charts,
// tables and SQL. Charts are Apache ECharts (the global `echarts`, inlined before this script).
//
// Made to be checked by a machine as well as read: every table cell and card number carries its
// exact value in `data-value`; every chart container names its table in `data-chart` and, once
// drawn, the number of rows it drew in `data-points` and their sum in `data-total`; and
// `body[data-rendered]` is "ok" at the end, or the errors' text when something could not be drawn.
(function () {
  "use strict";

  var errors = [];
  var charts = [];

  // --- Numbers as people read them -----------------------------------------------------------

  function scaled(value, base, units) {
    var sign = value < 0 ? "-" : "";
    var v = Math.abs(value);
    var i = 0;
    while (v >= base && i < units.length - 1) {
      v /= base;
      i += 1;
    }
    if (i === 0) return sign + Math.round(v) + " " + units[0];
    var digits = v < 10 ? 2 : v < 100 ? 1 : 0;
    return sign + v.toFixed(digits) + " " + units[i];
  }
  var grouped = new Intl.NumberFormat("en-US");

  function bytes(v) {
    return scaled(v, 1024, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]);
  }
  function bitsPerSecond(v) {
    return scaled(v, 1000, ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"]);
  }
  function usd(v) {
    var a = Math.abs(v);
    var sign = v < 0 ? "-" : "";
    if (a === 0) return "$0.00";
    // Sub-cent amounts are common (a GiB inside a region costs $0.01): two significant digits.
    if (a < 0.01) return sign + "$" + a.toFixed(Math.min(20, 1 - Math.floor(Math.log10(a))));
    return (
      sign +
      "$" +
      a.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    );
  }
  var formats = {
    text: function (v) { return String(v); },
    time: function (v) { return String(v); },
    bytes: bytes,
    bits_per_second: bitsPerSecond,
    usd: usd,
    count: function (v) { return grouped.format(v); },
    ratio: function (v) { return v.toFixed(2); },
    fraction: function (v) { return (v * 100).toFixed(1) + "%"; },
    bool: function (v) { return v ? "yes" : "no"; },
  };
  // `name` is the column's: a `change_*` column is signed, and its ratio a percentage
  // (0.5 is +50.0%); `asn`, a network's number, has no thousands separators.
  function format(kind, value, name) {
    if (value === null || value === undefined) return "—";
    var f = formats[kind];
    if (!f) throw new Error("unknown column kind " + kind);
    if (name === "asn") return String(value);
    if (name && name.indexOf("change") === 0) {
      var sign = value > 0 ? "+" : "";
      if (kind === "ratio") return sign + (value * 100).toFixed(1) + "%";
      return sign + f(value);
    }
    return f(value);
  }
  function numeric(kind) {
    return kind !== "text" && kind !== "time" && kind !== "bool";
  }
  function label(name) {
    return name.replace(/_/g, " ");
  }
  // `2026-01-05 10:00:00` (UTC) as milliseconds.
  function timeMs(text) {
    var ms = Date.parse(String(text).replace(" ", "T") + "Z");
    if (isNaN(ms)) throw new Error("not a time: " + text);
    return ms;
  }

  // --- The report value ---------------------------------------------------------------------

  // Read in draw(), where a broken value is reported like any other error.
  var report;

  function findTable(sectionId, tableId) {
    for (var s = 0; s < report.sections.length; s++) {
      var section = report.sections[s];
      if (section.id !== sectionId) continue;
      for (var t = 0; t < section.tables.length; t++) {
        if (section.tables[t].id === tableId) return section.tables[t];
      }
    }
    return null;
  }
  // The rows of a table as objects keyed by column name.
  function records(table) {
    return table.rows.map(function (row) {
      var r = {};
      table.columns.forEach(function (c, i) { r[c.name] = row[i]; });
      return r;
    });
  }
  function sum(list, key) {
    return list.reduce(function (acc, r) { return acc + (r[key] || 0); }, 0);
  }
  function unique(list) {
    var seen = Object.create(null);
    return list.filter(function (v) {
      if (v in seen) return false;
      seen[v] = true;
      return true;
    });
  }

  // --- DOM helpers --------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] === null || attrs[k] === undefined) return;
        if (k === "text") node.textContent = attrs[k];
        else if (k === "class") node.className = attrs[k];
        else node.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) {
      if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  // A number shown formatted, with its exact value in `data-value`.
  function valueSpan(kind, value, cls) {
    var attrs = { class: cls, text: format(kind, value) };
    if (value !== null && value !== undefined) attrs["data-value"] = String(value);
    return el("span", attrs);
  }

  // The same colour for a class in every card and chart: free traffic in greens and blues,
  // billed traffic in warm colours.
  var classColors = {
    INTRA_NODE: "#94a3b8",
    INTRA_ZONE: "#22c55e",
    INTRA_REGION: "#14b8a6",
    VPC: "#0ea5e9",
    INTER_ZONE: "#f59e0b",
    INTER_REGION: "#f97316",
    INTER_CLOUD: "#a855f7",
    INTERNET: "#ef4444",
    UNKNOWN: "#64748b",
    other: "#9ca3af",
  };
  var palette = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#f97316",
    "#84cc16", "#ec4899", "#64748b", "#14b8a6", "#a855f7"];
  function classColor(name, i) {
    return classColors[name] || palette[i % palette.length];
  }

  // --- Header and cards ---------------------------------------------------------------------

  function header() {
    var f = report.filters || {};
    var narrowed = ["cluster", "namespace", "workload", "class"]
      .filter(function (k) { return f[k]; })
      .map(function (k) { return k + " " + f[k]; });
    return el("header", null, [
      el("h1", { text: "Network traffic and cost" }),
      el("p", { class: "range" }, [
        el("b", { text: report.from + " – " + report.to + " UTC" }),
        ", compared with " + report.previous_from + " – " + report.from +
          (narrowed.length ? "; only " + narrowed.join(", ") : "; all traffic") +
          ". Made " + report.generated_at + ".",
      ]),
    ]);
  }

  function toc() {
    return el("nav", { class: "toc" }, report.sections.map(function (s) {
      return el("a", { href: "#s-" + s.id, text: s.title });
    }));
  }

  // "+12.5% (was $1.20)", coloured: more cost or bytes than before is red, less is green.
  function change(now, before, kind) {
    var node;
    if (before === null || before === undefined) return null;
    if (before === 0 && now === 0) node = el("span", { class: "change same", text: "no change" });
    else if (before === 0) node = el("span", { class: "change up", text: "new (was " + format(kind, 0) + ")" });
    else {
      var ratio = (now - before) / before;
      var cls = ratio > 0.0005 ? "up" : ratio < -0.0005 ? "down" : "same";
      var text = (ratio > 0 ? "+" : "") + (ratio * 100).toFixed(1) + "% (was " + format(kind, before) + ")";
      node = el("span", { class: "change " + cls, text: text });
    }
    node.setAttribute("data-previous", String(before));
    return node;
  }

  function card(name, color, r) {
    var node = el("div", { class: "card", "data-card": name }, [
      el("div", { class: "class", text: name }),
      valueSpan("usd", r.cost_usd, "cost"),
      el("div", null, [change(r.cost_usd, r.previous_cost_usd, "usd")]),
      el("div", { class: "bytes" }, [
        "sent ", valueSpan("bytes", r.sent_bytes, "sent"),
        " · received ", valueSpan("bytes", r.received_bytes, "received"),
      ]),
      el("div", null, [change(r.sent_bytes + r.received_bytes,
        r.previous_sent_bytes + r.previous_received_bytes, "bytes")]),
    ]);
    node.style.setProperty("--class-color", color);
    node.querySelector(".cost").setAttribute("data-field", "cost_usd");
    node.querySelector(".sent").setAttribute("data-field", "sent_bytes");
    node.querySelector(".received").setAttribute("data-field", "received_bytes");
    return node;
  }

  function cards(table) {
    var rows = records(table);
    var total = {};
    ["cost_usd", "sent_bytes", "received_bytes", "previous_cost_usd", "previous_sent_bytes",
      "previous_received_bytes"].forEach(function (k) { total[k] = sum(rows, k); });
    var list = [card("All classes", "#1f2937", total)];
    rows.forEach(function (r, i) { list.push(card(r["class"], classColor(r["class"], i), r)); });
    return el("div", { class: "cards", "data-cards": table.id }, list);
  }

  // --- Charts -------------------------------------------------------------------------------

  var base = {
    animation: false,
    useUTC: true,
    textStyle: { fontFamily: "system-ui, sans-serif" },
    tooltip: { confine: true },
  };
  function options(extra) {
    var o = {};
    Object.keys(base).forEach(function (k) { o[k] = base[k]; });
    Object.keys(extra).forEach(function (k) { o[k] = extra[k]; });
    return o;
  }
  function valueAxis(formatter) {
    return {
      type: "value",
      axisLabel: { formatter: formatter, hideOverlap: true },
      splitLine: { lineStyle: { color: "#eee" } },
    };
  }
  // A bytes axis with ticks on binary units (256 MiB, 1 GiB, ...) rather than ECharts' decimal
  // steps, which read as 954 MiB, 1.86 GiB.
  function bytesAxis(max) {
    var axis = valueAxis(bytes);
    if (!(max > 0)) return axis;
    var unit = Math.pow(1024, Math.max(0, Math.floor(Math.log(max) / Math.log(1024))));
    var steps = [0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
    for (var i = 0; i < steps.length; i++) {
      if (max / (steps[i] * unit) <= 5) {
        axis.interval = steps[i] * unit;
        break;
      }
    }
    return axis;
  }
  // Times in UTC, like the range in the header.
  var timeAxis = {
    type: "time",
    axisLabel: {
      hideOverlap: true,
      formatter: {
        year: "{yyyy}", month: "{MMM} {yyyy}", day: "{MMM} {d}", hour: "{HH}:{mm}",
        minute: "{HH}:{mm}", second: "{HH}:{mm}:{ss}", millisecond: "{HH}:{mm}:{ss}",
      },
    },
  };

  // The report's range on a time axis, so that a short range is not stretched over days. Bars
  // sit centred on their bucket's start: the axis is shifted by half a bucket to show them whole.
  function rangeAxis() {
    var half = report.bucket * 500;
    return Object.assign({}, timeAxis, {
      min: timeMs(report.from) - half,
      max: timeMs(report.to) - half,
    });
  }

  // Cost per class per bucket, stacked: bars while they stay wide enough to see, else areas.
  // Buckets without a row for a class are 0, so the stack stays aligned.
  function costOverTime(table) {
    var rows = records(table);
    var step = report.bucket * 1000;
    var from = timeMs(report.from);
    var to = timeMs(report.to);
    // Every bucket of the range, on the grid of the query's buckets (whatever their origin).
    var anchor = timeMs(rows[0].bucket);
    var buckets = [];
    if (step > 0) {
      for (var t = anchor - Math.floor((anchor - from) / step) * step; t < to; t += step) buckets.push(t);
    }
    var known = new Set(buckets);
    rows.forEach(function (r) {
      var ms = timeMs(r.bucket);
      if (!known.has(ms)) {
        known.add(ms);
        buckets.push(ms);
      }
    });
    buckets.sort(function (a, b) { return a - b; });
    var classes = unique(rows.map(function (r) { return r["class"]; }));
    // Bars show each bucket as what it is, a sum; past a few hundred they are thinner than a
    // pixel and areas read better.
    var bars = buckets.length <= 240;
    var series = classes.map(function (c, i) {
      var byBucket = {};
      rows.forEach(function (r) {
        if (r["class"] === c) byBucket[timeMs(r.bucket)] = (byBucket[timeMs(r.bucket)] || 0) + r.cost_usd;
      });
      return {
        name: c,
        type: bars ? "bar" : "line",
        stack: "cost",
        barMaxWidth: 80,
        showSymbol: false,
        areaStyle: bars ? undefined : { opacity: 0.8 },
        lineStyle: bars ? undefined : { width: 0.5 },
        itemStyle: { color: classColor(c, i) },
        emphasis: { focus: "series" },
        data: buckets.map(function (b) { return [b, byBucket[b] || 0]; }),
      };
    });
    return {
      points: rows.length,
      total: sum(rows, "cost_usd"),
      option: options({
        legend: { type: "scroll", top: 0 },
        grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
        tooltip: {
          trigger: "axis",
          confine: true,
          valueFormatter: function (v) { return usd(v); },
        },
        xAxis: rangeAxis(),
        yAxis: valueAxis(usd),
        series: series,
      }),
    };
  }

  // The tooltip of a bar chart with a bar per row: `lines(i, items)` gives the lines of row i.
  function rowTooltip(lines) {
    return {
      trigger: "axis",
      confine: true,
      axisPointer: { type: "shadow" },
      formatter: function (items) { return lines(items[0].dataIndex, items).join("<br>"); },
    };
  }

  // The category axis of a bar per row, names in the rows' order; long names are cut (the
  // tooltip has them whole) so the bars keep most of the width.
  function rowAxis(names, width) {
    return {
      type: "category",
      inverse: true,
      data: names,
      axisLabel: { width: Math.min(300, Math.round(width * 0.4)), overflow: "truncate" },
    };
  }

  // Horizontal bars of sent and received bytes, one per row in the table's order, the cost as
  // the bar's label.
  function pairBars(rows, name, width) {
    var names = rows.map(name);
    var costs = rows.map(function (r) { return r.cost_usd; });
    return {
      legend: { top: 0 },
      grid: { left: 8, right: 72, top: 28, bottom: 8, containLabel: true },
      tooltip: rowTooltip(function (i, items) {
        return [names[i]]
          .concat(items.map(function (it) { return it.marker + it.seriesName + ": " + bytes(it.value); }))
          .concat(["cost: " + usd(costs[i])]);
      }),
      xAxis: bytesAxis(rows.reduce(function (m, r) { return Math.max(m, r.sent_bytes + r.received_bytes); }, 0)),
      yAxis: rowAxis(names, width),
      series: [
        {
          name: "sent", type: "bar", stack: "bytes", itemStyle: { color: "#2563eb" },
          data: rows.map(function (r) { return r.sent_bytes; }),
        },
        {
          name: "received", type: "bar", stack: "bytes", itemStyle: { color: "#93c5fd" },
          data: rows.map(function (r) { return r.received_bytes; }),
          label: {
            show: true,
            position: "right",
            formatter: function (p) { return usd(costs[p.dataIndex]); },
          },
        },
      ],
    };
  }
  function barHeight(n) {
    return Math.max(200, 40 + 26 * n);
  }

  function topPairs(table, width) {
    var rows = records(table);
    return {
      points: rows.length,
      total: sum(rows, "sent_bytes"),
      height: barHeight(rows.length),
      option: options(pairBars(rows, function (r) {
        if (r.workload === "other") return "other";
        return r.workload + " (" + r.zone + ") → " + r.peer + " (" + r.peer_zone + ")";
      }, width)),
    };
  }

  function destinations(table, width) {
    var rows = records(table);
    return {
      points: rows.length,
      total: sum(rows, "sent_bytes"),
      height: barHeight(rows.length),
      option: options(pairBars(rows, function (r) {
        if (r.workload === "other") return "other";
        return r.workload + " → " + r.destination + " (" + r["class"] + ")";
      }, width)),
    };
  }

  // Sent bytes per country, largest first, labelled with the cost; a country new this period
  // is red.
  function countries(table, width) {
    var rows = records(table);
    var names = rows.map(function (r) { return r.new ? r.country + " (new)" : r.country; });
    return {
      points: rows.length,
      total: sum(rows, "sent_bytes"),
      height: barHeight(rows.length),
      option: options({
        grid: { left: 8, right: 72, top: 8, bottom: 8, containLabel: true },
        tooltip: rowTooltip(function (i) {
          var r = rows[i];
          return [names[i], "sent: " + bytes(r.sent_bytes), "cost: " + usd(r.cost_usd),
            "workloads: " + grouped.format(r.workloads)];
        }),
        xAxis: bytesAxis(rows.reduce(function (m, r) { return Math.max(m, r.sent_bytes); }, 0)),
        yAxis: rowAxis(names, width),
        series: [{
          name: "sent", type: "bar",
          data: rows.map(function (r) {
            return { value: r.sent_bytes, itemStyle: { color: r.new ? "#ef4444" : "#2563eb" } };
          }),
          label: {
            show: true,
            position: "right",
            formatter: function (p) { return usd(rows[p.dataIndex].cost_usd); },
          },
        }],
      }),
    };
  }

  // Sent bytes from each zone (columns) to each zone (rows); the diagonal stays in a zone.
  function zoneMatrix(table) {
    var rows = records(table);
    var zoneName = function (z) { return z === "" ? "(unknown)" : z; };
    var locals = unique(rows.map(function (r) { return zoneName(r.local_zone); })).sort();
    var remotes = unique(rows.map(function (r) { return zoneName(r.remote_zone); })).sort();
    var max = rows.reduce(function (m, r) { return Math.max(m, r.sent_bytes); }, 0);
    return {
      points: rows.length,
      total: sum(rows, "sent_bytes"),
      height: Math.max(280, 100 + 48 * remotes.length),
      option: options({
        grid: { left: 8, right: 96, top: 16, bottom: 8, containLabel: true },
        tooltip: {
          confine: true,
          formatter: function (p) {
            return p.value[0] + " → " + p.value[1] + ": " + bytes(p.value[2]);
          },
        },
        xAxis: { type: "category", data: locals, splitArea: { show: true } },
        yAxis: { type: "category", data: remotes, splitArea: { show: true } },
        visualMap: {
          min: 0,
          max: max || 1,
          calculable: true,
          orient: "vertical",
          right: 0,
          top: "middle",
          itemHeight: 120,
          formatter: function (v) { return bytes(v); },
          inRange: { color: ["#eff6ff", "#93c5fd", "#1d4ed8"] },
        },
        series: [{
          type: "heatmap",
          data: rows.map(function (r) { return [zoneName(r.local_zone), zoneName(r.remote_zone), r.sent_bytes]; }),
          label: { show: true, formatter: function (p) { return bytes(p.value[2]); } },
          emphasis: { itemStyle: { borderColor: "#111", borderWidth: 1 } },
        }],
      }),
    };
  }

  // Source workload -> class -> destination. A name can be a source and a destination (and
  // `other` can be both), so every node is named with its level to keep them apart and the graph
  // free of cycles; the label shows the name alone.
  function sankey(table) {
    var rows = records(table).filter(function (r) { return r.bytes > 0; });
    var levels = ["source", "class", "destination"];
    var nodes = {};
    var links = {};
    function node(level, name) {
      var id = level + ": " + name;
      if (!nodes[id]) nodes[id] = { name: id, depth: levels.indexOf(level), label: name };
      return id;
    }
    function link(a, b, v) {
      var k = a + "\u0000" + b;
      if (!links[k]) links[k] = { source: a, target: b, value: 0 };
      links[k].value += v;
    }
    rows.forEach(function (r) {
      var s = node("source", r.source);
      var c = node("class", r["class"]);
      var d = node("destination", r.destination);
      link(s, c, r.bytes);
      link(c, d, r.bytes);
    });
    var list = Object.keys(nodes).map(function (k) {
      var n = nodes[k];
      var out = { name: n.name, depth: n.depth };
      if (n.depth === 1) out.itemStyle = { color: classColor(n.label, 0) };
      return out;
    });
    var perLevel = [0, 0, 0];
    list.forEach(function (n) { perLevel[n.depth] += 1; });
    var shortName = function (id) { return id.slice(id.indexOf(": ") + 2); };
    return {
      points: records(table).length,
      total: sum(rows, "bytes"),
      // Room for a label per node even when most of the bytes go one way.
      height: Math.max(360, 44 * Math.max.apply(null, perLevel)),
      option: options({
        tooltip: {
          trigger: "item",
          confine: true,
          formatter: function (p) {
            if (p.dataType === "edge") {
              return shortName(p.data.source) + " → " + shortName(p.data.target) + ": " + bytes(p.data.value);
            }
            return shortName(p.name) + ": " + bytes(p.value);
          },
        },
        series: [{
          type: "sankey",
          left: 8,
          right: 160,
          top: 8,
          bottom: 8,
          nodeGap: 10,
          layoutIterations: 32,
          emphasis: { focus: "adjacency" },
          lineStyle: { color: "gradient", opacity: 0.35, curveness: 0.5 },
          label: { formatter: function (p) { return shortName(p.name); }, fontSize: 11 },
          data: list,
          links: Object.keys(links).map(function (k) { return links[k]; }),
        }],
      }),
    };
  }

  // One line per node and direction, in bits per second; for a node at half its instance's
  // baseline bandwidth or more, the baseline as a dotted line. (Not for every node: a 12.5 Gbit/s
  // line would flatten the traffic of idle nodes to nothing.)
  function nodeOverTime(table) {
    var rows = records(table);
    var nodesList = unique(rows.map(function (r) { return r.node; })).sort();
    var limits = {};
    var nodesTable = findTable("throughput", "nodes");
    if (nodesTable) {
      records(nodesTable).forEach(function (r) {
        if (r.bandwidth_bps && r.peak_utilization >= 0.5) limits[r.node] = r.bandwidth_bps;
      });
    }
    var from = timeMs(report.from);
    var to = timeMs(report.to);
    var series = [];
    nodesList.forEach(function (n, i) {
      var mine = rows.filter(function (r) { return r.node === n; });
      var color = palette[i % palette.length];
      series.push({
        name: n + " out", type: "line", showSymbol: false, itemStyle: { color: color },
        data: mine.map(function (r) { return [timeMs(r.bucket), r.out_bps]; }),
      });
      series.push({
        name: n + " in", type: "line", showSymbol: false, itemStyle: { color: color },
        lineStyle: { type: "dashed" },
        data: mine.map(function (r) { return [timeMs(r.bucket), r.in_bps]; }),
      });
      if (limits[n]) {
        series.push({
          name: n + " baseline", type: "line", showSymbol: false, itemStyle: { color: color },
          lineStyle: { type: "dotted", width: 1.5 },
          data: [[from, limits[n]], [to, limits[n]]],
        });
      }
    });
    return {
      points: rows.length,
      total: sum(rows, "out_bps"),
      option: options({
        legend: { type: "scroll", top: 0 },
        grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
        tooltip: { trigger: "axis", confine: true, valueFormatter: function (v) { return bitsPerSecond(v); } },
        xAxis: rangeAxis(),
        yAxis: valueAxis(bitsPerSecond),
        series: series,
      }),
    };
  }

  // Cost per namespace per day, stacked.
  function namespacesByDay(table) {
    var rows = records(table);
    var days = unique(rows.map(function (r) { return r.day; })).sort();
    var dayLabel = function (d) { return String(d).replace(/ 00:00:00$/, ""); };
    var namespaces = unique(rows.map(function (r) { return r.namespace; }));
    return {
      points: rows.length,
      total: sum(rows, "cost_usd"),
      option: options({
        legend: { type: "scroll", top: 0 },
        grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
        tooltip: { trigger: "axis", confine: true, valueFormatter: function (v) { return usd(v); } },
        xAxis: { type: "category", data: days.map(dayLabel) },
        yAxis: valueAxis(usd),
        series: namespaces.map(function (ns, i) {
          var byDay = {};
          rows.forEach(function (r) { if (r.namespace === ns) byDay[r.day] = (byDay[r.day] || 0) + r.cost_usd; });
          return {
            name: ns, type: "bar", stack: "cost", barMaxWidth: 80, itemStyle: { color: palette[i % palette.length] },
            emphasis: { focus: "series" },
            data: days.map(function (d) { return byDay[d] || 0; }),
          };
        }),
      }),
    };
  }

  // Which tables get a chart, in each section; `wide` spans the page width.
  var chartsBySection = {
    overview: [
      { table: "cost_over_time", title: "Cost by class over time", draw: costOverTime, wide: true },
      { table: "sankey", title: "Sent bytes: source workload → class → destination", draw: sankey, wide: true },
    ],
    cross_zone: [
      { table: "zone_matrix", title: "Sent bytes from zone (columns) to zone (rows)", draw: zoneMatrix },
      { table: "top_pairs", title: "Top workload pairs across zones (label: cost)", draw: topPairs },
    ],
    egress: [
      { table: "destinations", title: "Cloud-service and internet destinations (label: cost)", draw: destinations, wide: true },
    ],
    egress_destinations: [
      { table: "countries", title: "Internet egress by country (label: cost; red: new)", draw: countries, wide: true },
    ],
    throughput: [
      { table: "node_over_time", title: "Node throughput (solid out, dashed in, dotted: the instance's baseline bandwidth)", draw: nodeOverTime, wide: true },
    ],
    cost_by_day: [
      { table: "namespaces", title: "Cost per namespace per day", draw: namespacesByDay, wide: true },
    ],
  };

  function chartFigure(spec, table) {
    // Screen readers get the title; the table below the chart has the numbers.
    var box = el("div", { class: "chart", "data-chart": spec.table, role: "img", "aria-label": spec.title });
    var figure = el("figure", { class: spec.wide ? "wide" : null }, [
      el("figcaption", { text: spec.title }), box,
    ]);
    return { figure: figure, box: box, spec: spec, table: table };
  }

  // Draws one chart once its container is in the page (ECharts needs its size).
  function drawChart(item) {
    var box = item.box;
    try {
      if (!item.table || item.table.rows.length === 0) {
        box.setAttribute("data-points", "0");
        box.style.height = "auto";
        box.appendChild(el("div", { class: "empty", text: "No data in this range." }));
        return;
      }
      var drawn = item.spec.draw(item.table, box.clientWidth || 600);
      if (drawn.height) box.style.height = drawn.height + "px";
      var chart = echarts.init(box, null, { renderer: "svg" });
      chart.setOption(drawn.option);
      charts.push(chart);
      box.setAttribute("data-points", String(drawn.points));
      box.setAttribute("data-total", String(drawn.total));
    } catch (e) {
      fail("chart " + item.spec.table, e);
      box.appendChild(el("div", { class: "error", text: "This chart could not be drawn: " + e.message }));
    }
  }

  // --- Tables -------------------------------------------------------------------------------

  function dataTable(section, table) {
    if (table.rows.length === 0) {
      return el("p", { class: "empty-table", text: "No rows in this range." });
    }
    var head = el("tr", null, table.columns.map(function (c) {
      return el("th", { class: numeric(c.kind) ? "num" : null, text: label(c.name) });
    }));
    // A row flagged `new` (a destination not seen in the previous period) stands out.
    var flag = table.columns.findIndex(function (c) {
      return c.name === "new" && c.kind === "bool";
    });
    var body = table.rows.map(function (row) {
      var classes = [row[0] === "other" ? "other" : "",
        flag >= 0 && row[flag] === true ? "new" : ""];
      return el("tr", { class: classes.join(" ").trim() || null }, row.map(function (v, i) {
        var kind = table.columns[i].kind;
        var cls = [numeric(kind) ? "num" : "", v === null ? "null" : ""].join(" ").trim();
        var attrs = { class: cls || null, text: format(kind, v, table.columns[i].name) };
        if (v !== null) attrs["data-value"] = String(v);
        return el("td", attrs);
      }));
    });
    return el("div", { class: "table-wrap" }, [
      el("table", { class: "data", "data-table": section.id + "." + table.id }, [
        el("thead", null, [head]), el("tbody", null, body),
      ]),
    ]);
  }

  function tableBlock(section, table) {
    var rows = dataTable(section, table);
    // Time series are long and their chart shows them: their rows start folded.
    var timeSeries = table.columns.length > 0 && table.columns[0].kind === "time" && table.rows.length > 12;
    var shown = timeSeries
      ? el("details", { class: "rows" }, [el("summary", { text: table.rows.length + " rows" }), rows])
      : rows;
    return el("div", { class: "table", id: "t-" + section.id + "-" + table.id }, [
      el("h3", { text: table.title }),
      shown,
      el("details", { class: "sql" }, [
        el("summary", { text: "SQL" }),
        el("pre", null, [el("code", { text: table.sql })]),
      ]),
    ]);
  }

  // --- The page -----------------------------------------------------------------------------

  function fail(what, e) {
    var text = what + ": " + (e && e.message ? e.message : String(e));
    errors.push(text);
    console.error(text);
  }

  function sectionNode(section, pending) {
    var node = el("section", { class: "question", id: "s-" + section.id }, [
      el("h2", { text: section.title }),
      el("p", { class: "ask", text: section.question }),
      section.note ? el("p", { class: "note", text: section.note }) : null,
    ]);
    if (section.id === "overview") {
      var byClass = section.tables.filter(function (t) { return t.id === "by_class"; })[0];
      if (byClass) node.appendChild(cards(byClass));
    }
    var specs = chartsBySection[section.id] || [];
    if (specs.length) {
      var grid = el("div", { class: "charts" });
      specs.forEach(function (spec) {
        var item = chartFigure(spec, findTable(section.id, spec.table));
        grid.appendChild(item.figure);
        pending.push(item);
      });
      node.appendChild(grid);
    }
    section.tables.forEach(function (t) { node.appendChild(tableBlock(section, t)); });
    return node;
  }

  function draw() {
    report = JSON.parse(document.getElementById("report").textContent);
    var main = document.getElementById("page");
    var pending = [];
    main.appendChild(header());
    main.appendChild(toc());
    report.sections.forEach(function (s) {
      try {
        main.appendChild(sectionNode(s, pending));
      } catch (e) {
        fail("section " + s.id, e);
      }
    });
    if (typeof echarts === "undefined") throw new Error("the chart library did not load");
    pending.forEach(drawChart);
    var resize = function () { charts.forEach(function (c) { c.resize(); }); };
    window.addEventListener("resize", resize);
    // Print lays the page out after this event, narrower than the screen: charts take the width
    // of an A4 or Letter page's text (about 680 CSS pixels) and get the window's back after.
    window.addEventListener("beforeprint", function () {
      charts.forEach(function (c) { c.resize({ width: 680 }); });
    });
    window.addEventListener("afterprint", resize);
  }

  try {
    draw();
  } catch (e) {
    fail("page", e);
  }
  if (errors.length) {
    var main = document.getElementById("page");
    main.insertBefore(el("div", { class: "error", text: "Parts of this report could not be drawn: " + errors.join("; ") }), main.firstChild);
  }
  document.body.dataset.rendered = errors.length ? errors.join("; ") : "ok";
})();
