/* autoresearch-ci dashboard: draws the figures, the progress chart and the experiments table
 * from the JSON embedded in index.html. No network, no dependencies, no build step.
 * Every string from the ledger is set with textContent or as an attribute, never as HTML. */
(function () {
  "use strict";

  var SVGNS = "http://www.w3.org/2000/svg";
  var STATUS_ORDER = ["keep", "discard", "crash", "invalid", "infra-error", "proposal-failed", "pending"];
  var STATUS_LABEL = {
    keep: "kept", discard: "discarded", crash: "crashed", invalid: "invalid",
    "infra-error": "infra error", "proposal-failed": "proposal failed", pending: "pending"
  };
  var TOP_BAND = { crash: 1, invalid: 1, "infra-error": 1, "proposal-failed": 1 };
  var PAGE_SIZE = 50;

  var data = JSON.parse(document.getElementById("ledger-data").textContent);
  var S = data.summary;
  var SERIES = S.series;
  var ROWS = data.rows.map(function (r) {
    var o = {};
    for (var i = 0; i < data.cols.length; i++) o[data.cols[i]] = r[i];
    return o;
  });
  var repoUrl = data.meta.repo_url;

  var state = {
    series: 0, yRange: "focus",
    statuses: {}, runner: "", device: "", query: "",
    sortKey: "n", sortDir: -1, page: 0, highlight: null
  };

  // --- small helpers -----------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function isNum(x) { return typeof x === "number" && isFinite(x); }
  function fmtInt(x) { return isNum(x) ? Math.round(x).toLocaleString("en-US") : "—"; }
  function fmtBpb(x) { return isNum(x) ? x.toFixed(4) : "—"; }
  function fmtSigned(x, d) {
    if (!isNum(x)) return "—";
    return (x > 0 ? "+" : x < 0 ? "−" : "±") + Math.abs(x).toFixed(d === undefined ? 4 : d);
  }
  function fmtUsd(x) {
    if (!isNum(x)) return "—";
    if (x >= 100) return "$" + Math.round(x).toLocaleString("en-US");
    return "$" + x.toFixed(x < 10 ? 2 : 1);
  }
  function fmtCompact(x) {
    if (!isNum(x)) return "—";
    var a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(1) + "B";
    if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (x / 1e3).toFixed(0) + "k";
    return fmtInt(x);
  }
  function fmtPct(x, d) { return isNum(x) ? (100 * x).toFixed(d === undefined ? 1 : d) + "%" : "—"; }
  // "paired Δ −0.0123 [−0.0180, −0.0066] (3 pairs)"; "Δ −0.0123" for an older, unpaired record
  function deltaText(r, d) {
    if (!isNum(r.d)) return "—";
    if (!isNum(r.np)) return "Δ " + fmtSigned(r.d, d);
    var ci = isNum(r.lo) && isNum(r.hi) ? " [" + fmtSigned(r.lo, d) + ", " + fmtSigned(r.hi, d) + "]" : "";
    return "paired Δ " + fmtSigned(r.d, d) + ci + " (" + r.np + (r.np === 1 ? " pair)" : " pairs)");
  }
  function fmtDate(t) { return isNum(t) ? new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") : "—"; }
  function shortSha(c) { return c ? c.slice(0, 7) : ""; }
  function repoOf(row) {
    if (repoUrl) return repoUrl;
    var m = row.pr && /^(https?:\/\/[^?#]+)\/pull\/\d+/.exec(row.pr);
    return m ? m[1] : null;
  }
  function safeHref(u) { return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null; }
  function tinyDevice(name) {  // "NVIDIA H100 80GB HBM3" -> "H100"
    var s = shortDevice(name), first = s.split(" ")[0];
    return /\d/.test(first) ? first : s.slice(0, 16);
  }
  function shortDevice(name) {
    return String(name).replace(/^NVIDIA\s+/i, "").replace(/-SXM\d?-?/i, " ").replace(/\s+/g, " ").trim();
  }

  // --- warnings and header -------------------------------------------------------------------------

  function renderWarnings() {
    var w = data.meta.warnings || [];
    if (!w.length) return;
    var box = $("warnings");
    box.appendChild(el("strong", null, "The ledger has problems: "));
    var ul = el("ul");
    w.forEach(function (m) { ul.appendChild(el("li", null, m)); });
    box.appendChild(ul);
    box.hidden = false;
  }

  function card(label, value, sub, opts) {
    var c = el("div", { "class": "card" + (opts && opts.cls ? " " + opts.cls : ""), "data-figure": opts && opts.key });
    c.appendChild(el("div", { "class": "card-label" }, label));
    c.appendChild(el("div", { "class": "card-value" }, value));
    if (sub) c.appendChild(el("div", { "class": "card-sub" }, sub));
    if (opts && opts.title) c.title = opts.title;
    return c;
  }

  function renderFigures() {
    var box = $("figures");
    box.textContent = "";
    var span = S.first_at ? "since " + S.first_at.slice(0, 10) : "no experiments yet";
    box.appendChild(card("Experiments", fmtInt(S.experiments), span, { key: "experiments" }));
    box.appendChild(card("Kept", fmtInt(S.kept), fmtInt(S.counts.crash) + " crashed · " + fmtInt(S.counts.discard) + " discarded",
      { key: "kept", cls: "accent-keep" }));
    box.appendChild(card("Keep rate", fmtPct(S.keep_rate), "of " + fmtInt(S.judged) + " judged",
      { key: "keep_rate", title: "kept / experiments judged (kept, discarded, crashed, invalid); infra errors and failed proposals are not charged" }));
    var s = SERIES[state.series];
    if (s) {
      var sub;
      if (isNum(s.improvement)) {
        sub = fmtSigned(-s.improvement) + " (" + fmtSigned(-s.improvement_pct, 2) + "%) vs first baseline " + fmtBpb(s.first_baseline);
      } else if (isNum(s.first_baseline)) {
        sub = "no kept improvement yet; baseline " + fmtBpb(s.first_baseline);
      } else {
        sub = "no baseline yet";
      }
      var best = isNum(s.best) ? s.best : s.first_baseline;
      box.appendChild(card("Best val_bpb" + (SERIES.length > 1 ? " · " + shortDevice(s.device) : ""), fmtBpb(best), sub,
        { key: "best", cls: (isNum(s.best) ? "accent-keep " : "") + "wide" }));
    } else {
      box.appendChild(card("Best val_bpb", "—", "no results yet", { key: "best", cls: "wide" }));
    }
    box.appendChild(card("GPU-hours", isNum(S.gpu_hours) ? S.gpu_hours.toFixed(S.gpu_hours < 10 ? 2 : 1) : "—",
      isNum(S.gpu_hours_per_kept) ? S.gpu_hours_per_kept.toFixed(2) + " per kept" : "", { key: "gpu_hours" }));
    box.appendChild(card("Spent", fmtUsd(S.total_usd), fmtUsd(S.compute_usd) + " compute · " + fmtUsd(S.llm_usd) + " LLM",
      { key: "total_usd" }));
    box.appendChild(card("LLM tokens", fmtCompact(S.llm_tokens), "", { key: "llm_tokens", title: fmtInt(S.llm_tokens) + " tokens" }));
    box.appendChild(card("Cost per kept", fmtUsd(S.usd_per_kept), S.kept ? "dollars per improvement" : "nothing kept yet",
      { key: "usd_per_kept" }));
    box.appendChild(card("Per day", isNum(S.per_day) ? S.per_day.toFixed(S.per_day < 10 ? 1 : 0) : "—", "experiments",
      { key: "per_day" }));
  }

  // --- the progress chart --------------------------------------------------------------------------

  var chart = { pts: [], xs: [], W: 0 };

  function seriesRows(si) { return ROWS.filter(function (r) { return r.s === si; }); }

  function renderSeriesSwitch() {
    var box = $("series-switch");
    if (SERIES.length < 2) return;
    box.hidden = false;
    $("series-note").hidden = false;
    SERIES.forEach(function (s, i) {
      var b = el("button", { type: "button", role: "tab", "class": "seg", "data-series": i,
        "aria-selected": i === state.series ? "true" : "false", title: s.key }, shortDevice(s.key) + " (" + fmtInt(s.experiments) + ")");
      b.addEventListener("click", function () {
        state.series = i;
        Array.prototype.forEach.call(box.children, function (c, j) { c.setAttribute("aria-selected", j === i ? "true" : "false"); });
        renderFigures();
        drawChart();
      });
      box.appendChild(b);
    });
  }

  function niceTicks(lo, hi, count) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
    return out;
  }

  function quantile(sorted, q) {
    if (!sorted.length) return NaN;
    var pos = (sorted.length - 1) * q, b = Math.floor(pos), r = pos - b;
    return sorted[b + 1] !== undefined ? sorted[b] + r * (sorted[b + 1] - sorted[b]) : sorted[b];
  }

  function showChartMessage(msg) {
    $("chart").hidden = true;
    $("chart").textContent = "";
    $("legend").textContent = "";
    $("y-range").parentNode.hidden = true;
    var box = $("chart-empty");
    box.textContent = "";
    box.appendChild(el("p", { "class": "empty-title" }, msg[0]));
    if (msg[1]) box.appendChild(el("p", null, msg[1]));
    box.hidden = false;
    chart.pts = [];
  }

  function drawChart() {
    hideTooltip();
    var s = SERIES[state.series];
    var rows = s ? seriesRows(state.series) : [];
    if (!ROWS.length) {
      showChartMessage(["No experiments yet.", "The chart appears once the loop has judged its first candidate."]);
      return;
    }
    var plotted = rows.filter(function (r) { return isNum(r.v) && !TOP_BAND[r.st]; });
    if (!plotted.length) {
      var n = rows.length;
      showChartMessage(["Nothing to chart yet" + (SERIES.length > 1 ? " on " + shortDevice(s.key) : "") + ".",
        "None of the " + fmtInt(n) + " experiment" + (n === 1 ? "" : "s") +
        " produced a val_bpb: they crashed, were invalid or failed before training. The table below has every one and why."]);
      return;
    }
    $("chart-empty").hidden = true;
    $("y-range").parentNode.hidden = false;
    var box = $("chart");
    box.hidden = false;
    box.textContent = "";

    var W = Math.max(300, box.clientWidth || 800);
    var narrow = W < 640;
    var H = narrow ? 300 : 400;
    var M = { l: narrow ? 48 : 64, r: narrow ? 10 : 18, t: 34, b: 42 };
    var bandY = 16;  // the top band where failures are marked
    var pw = W - M.l - M.r, ph = H - M.t - M.b;

    // x: the experiment's global number, so the chart and the table's # agree
    var xmin = rows[0].n, xmax = rows[rows.length - 1].n;
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    var X = function (n) { return M.l + (n - xmin) / (xmax - xmin) * pw; };

    // y: the band, the frontier and the values; "focus" clips the long tail of bad results
    var vals = plotted.map(function (r) { return r.v; }).sort(function (a, b) { return a - b; });
    var lo = vals[0], hiAll = vals[vals.length - 1];
    var bandHi = -Infinity, noises = [];
    rows.forEach(function (r) {
      if (isNum(r.bm)) {
        var nz = isNum(r.nz) ? r.nz : 0;
        lo = Math.min(lo, r.bm - Math.max(nz, isNum(r.th) ? r.th : 0));
        bandHi = Math.max(bandHi, r.bm + nz);
        noises.push(nz);
      }
    });
    if (isNum(s.first_baseline)) { lo = Math.min(lo, s.first_baseline); bandHi = Math.max(bandHi, s.first_baseline); }
    var hi;
    if (state.yRange === "full" || !isFinite(bandHi)) {
      hi = Math.max(hiAll, isFinite(bandHi) ? bandHi : hiAll);
    } else {
      noises.sort(function (a, b) { return a - b; });
      var nz = quantile(noises, 0.5) || 0;
      hi = Math.max(bandHi + Math.max(6 * nz, (bandHi - lo) * 0.25), Math.min(hiAll, quantile(vals, 0.5)));
      hi = Math.min(hi, Math.max(hiAll, bandHi));
    }
    if (!(hi > lo)) { hi = lo + 0.001; lo = lo - 0.001; }
    var pad = (hi - lo) * 0.06;
    lo -= pad; hi += pad;
    var Y = function (v) { return M.t + (hi - v) / (hi - lo) * ph; };
    var clampY = function (v) { return Math.max(M.t, Math.min(M.t + ph, Y(v))); };

    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, "class": "plot", role: "img",
      "aria-label": "val_bpb of " + rows.length + " experiments on " + s.key + ", lower is better" });
    var desc = svg("desc", {});
    desc.textContent = "Each experiment is a point in order; kept ones are green and form the frontier line; " +
      "discarded ones are grey; crashes and other failures are marked in the band at the top.";
    root.appendChild(desc);

    // grid and axes
    var grid = svg("g", { "class": "grid" });
    var yt = niceTicks(lo, hi, narrow ? 4 : 6);
    var step = yt.length > 1 ? yt[1] - yt[0] : (hi - lo);
    var decimals = Math.min(6, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
    yt.forEach(function (v) {
      var y = Y(v);
      grid.appendChild(svg("line", { x1: M.l, x2: M.l + pw, y1: y, y2: y }));
      var t = svg("text", { x: M.l - 8, y: y + 4, "text-anchor": "end", "class": "tick" });
      t.textContent = v.toFixed(decimals);
      grid.appendChild(t);
    });
    var lastRight = -Infinity;
    niceTicks(xmin, xmax, narrow ? 4 : 8).forEach(function (v) {
      if (v !== Math.round(v)) return;
      var x = X(v), label = fmtInt(v), w = label.length * 6.6;
      var anchor = x > M.l + pw - w / 2 ? "end" : x < M.l + w / 2 ? "start" : "middle";
      var left = anchor === "end" ? x - w : anchor === "start" ? x : x - w / 2;
      if (left < lastRight + 8) return;  // no overlapping labels
      lastRight = left + w;
      grid.appendChild(svg("line", { x1: x, x2: x, y1: M.t + ph, y2: M.t + ph + 5, "class": "xtick" }));
      var t = svg("text", { x: x, y: M.t + ph + 20, "text-anchor": anchor, "class": "tick" });
      t.textContent = label;
      grid.appendChild(t);
    });
    root.appendChild(grid);
    root.appendChild(svg("rect", { x: M.l, y: M.t, width: pw, height: ph, "class": "frame" }));
    var xl = svg("text", { x: M.l + pw / 2, y: H - 6, "text-anchor": "middle", "class": "axis-label" });
    xl.textContent = "experiment #";
    root.appendChild(xl);
    var yl = narrow
      ? svg("text", { x: M.l + 6, y: M.t + 14, "text-anchor": "start", "class": "axis-label inset" })
      : svg("text", { x: 14, y: M.t + ph / 2, "text-anchor": "middle", "class": "axis-label",
        transform: "rotate(-90 14 " + (M.t + ph / 2) + ")" });
    yl.textContent = narrow ? "val_bpb ↓ better" : "val_bpb (lower is better)";
    root.appendChild(yl);

    // the failure band at the top
    root.appendChild(svg("rect", { x: M.l, y: M.t - bandY - 6, width: pw, height: bandY, "class": "fail-band" }));
    var fl = svg("text", { x: M.l - 8, y: M.t - bandY / 2 - 2, "text-anchor": "end", "class": "tick fail-label" });
    fl.textContent = "failed";
    root.appendChild(fl);

    // the baseline's noise band and the bar a keep had to clear, as steps over the experiments
    var band = [], bar = [];
    rows.forEach(function (r, i) {
      if (!isNum(r.bm)) return;
      var x0 = X(i === 0 ? xmin : (rows[i - 1].n + r.n) / 2);
      var x1 = X(i === rows.length - 1 ? xmax : (r.n + rows[i + 1].n) / 2);
      var nz = isNum(r.nz) ? r.nz : 0;
      band.push([x0, x1, clampY(r.bm + nz), clampY(r.bm - nz)]);
      if (isNum(r.th)) bar.push([x0, x1, clampY(r.bm - r.th)]);
    });
    if (band.length) {
      var up = "", down = "";
      band.forEach(function (b, i) { up += (i ? "L" : "M") + b[0].toFixed(1) + "," + b[2].toFixed(1) + "L" + b[1].toFixed(1) + "," + b[2].toFixed(1); });
      for (var i = band.length - 1; i >= 0; i--) down += "L" + band[i][1].toFixed(1) + "," + band[i][3].toFixed(1) + "L" + band[i][0].toFixed(1) + "," + band[i][3].toFixed(1);
      root.appendChild(svg("path", { d: up + down + "Z", "class": "noise-band" }));
    }
    if (bar.length) {
      var d = "";
      bar.forEach(function (b, i) { d += (i ? "L" : "M") + b[0].toFixed(1) + "," + b[2].toFixed(1) + "L" + b[1].toFixed(1) + "," + b[2].toFixed(1); });
      root.appendChild(svg("path", { d: d, "class": "keep-bar" }));
    }

    // points: discards and pending first, the frontier over them, kept points on top
    var pts = [];
    var gOther = svg("g", { "class": "pts" }), gFail = svg("g", { "class": "pts" }), gKeep = svg("g", { "class": "pts" });
    var failY = M.t - bandY / 2 - 6;
    rows.forEach(function (r) {
      var x = X(r.n), y, node;
      if (TOP_BAND[r.st] || !isNum(r.v)) {
        y = failY;
        var m = 3.5;
        if (r.st === "crash") node = svg("path", { d: "M" + (x - m) + "," + (y - m) + "L" + (x + m) + "," + (y + m) + "M" + (x + m) + "," + (y - m) + "L" + (x - m) + "," + (y + m) });
        else if (r.st === "invalid") node = svg("path", { d: "M" + (x - m) + "," + (y - m) + "L" + (x + m) + "," + (y - m) + "L" + x + "," + (y + m) + "Z" });
        else if (r.st === "infra-error") node = svg("rect", { x: x - 3, y: y - 3, width: 6, height: 6 });
        else node = svg("path", { d: "M" + x + "," + (y - m) + "L" + (x + m) + "," + y + "L" + x + "," + (y + m) + "L" + (x - m) + "," + y + "Z" });
        node.setAttribute("class", "pt " + r.st);
        gFail.appendChild(node);
      } else {
        var off = r.v > hi;
        y = clampY(r.v);
        if (off) {
          node = svg("path", { d: "M" + (x - 3) + "," + (y + 4) + "L" + (x + 3) + "," + (y + 4) + "L" + x + "," + (y - 1) + "Z",
            "class": "pt " + r.st + " off" });
        } else {
          node = svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: r.st === "keep" ? 4.5 : r.st === "pending" ? 3 : 2.4,
            "class": "pt " + r.st });
        }
        (r.st === "keep" ? gKeep : gOther).appendChild(node);
      }
      node.setAttribute("data-n", r.n);
      pts.push({ x: x, y: y, r: r, off: !!(r.v > hi && !TOP_BAND[r.st]) });
    });
    root.appendChild(gOther);

    // the kept frontier: a step line from the first baseline through the running best
    var best = isNum(s.first_baseline) ? s.first_baseline : null;
    var fd = "", started = false, lastX = X(xmin), keptRows = [];
    if (best !== null) { fd = "M" + X(xmin).toFixed(1) + "," + Y(best).toFixed(1); started = true; }
    rows.forEach(function (r) {
      if (r.st !== "keep" || !isNum(r.v)) return;
      keptRows.push(r);
      var x = X(r.n);
      if (!started) { fd = "M" + x.toFixed(1) + "," + Y(r.v).toFixed(1); started = true; best = r.v; return; }
      if (r.v < best) {
        fd += "L" + x.toFixed(1) + "," + Y(best).toFixed(1) + "L" + x.toFixed(1) + "," + Y(r.v).toFixed(1);
        best = r.v;
      }
      lastX = x;
    });
    if (started) {
      fd += "L" + (M.l + pw).toFixed(1) + "," + Y(best).toFixed(1);
      root.appendChild(svg("path", { d: fd, "class": "frontier" }));
    }
    root.appendChild(gFail);
    root.appendChild(gKeep);

    // karpathy's labels: name the kept steps when there are few enough to read
    if (!narrow && keptRows.length && keptRows.length <= 20) {
      var gl = svg("g", { "class": "klabels" }), lastLabel = -Infinity;
      keptRows.forEach(function (r) {
        var x = X(r.n) + 4, y = clampY(r.v) - 7;
        if (x - lastLabel < 13) return;  // too close to the previous label to read
        lastLabel = x;
        var t = svg("text", { x: x, y: y, transform: "rotate(-28 " + x + " " + y + ")" });
        var h = r.h || r.id;
        t.textContent = h.length > 42 ? h.slice(0, 40) + "…" : h;
        gl.appendChild(t);
      });
      root.appendChild(gl);
    }

    root.appendChild(svg("circle", { cx: -10, cy: -10, r: 7, "class": "hover-ring", id: "hover-ring" }));
    box.appendChild(root);
    chart.pts = pts.sort(function (a, b) { return a.x - b.x; });
    chart.xs = chart.pts.map(function (p) { return p.x; });
    chart.W = W;
    chart.svg = root;
    renderLegend(rows);
  }

  function renderLegend(rows) {
    var counts = {};
    rows.forEach(function (r) { counts[r.st] = (counts[r.st] || 0) + 1; });
    var ul = $("legend");
    ul.textContent = "";
    var items = [["keep", "kept"], ["discard", "discarded"], ["crash", "crashed"], ["invalid", "invalid"],
      ["infra-error", "infra error"], ["proposal-failed", "proposal failed"], ["pending", "pending"]];
    items.forEach(function (it) {
      if (!counts[it[0]] && it[0] !== "keep" && it[0] !== "discard") return;
      var li = el("li");
      var icon = svg("svg", { width: 14, height: 14, viewBox: "-7 -7 14 14", "aria-hidden": "true" });
      var m = 3.5, node;
      if (it[0] === "crash") node = svg("path", { d: "M-3.5,-3.5L3.5,3.5M3.5,-3.5L-3.5,3.5" });
      else if (it[0] === "invalid") node = svg("path", { d: "M-" + m + ",-" + m + "L" + m + ",-" + m + "L0," + m + "Z" });
      else if (it[0] === "infra-error") node = svg("rect", { x: -3, y: -3, width: 6, height: 6 });
      else if (it[0] === "proposal-failed") node = svg("path", { d: "M0,-3.5L3.5,0L0,3.5L-3.5,0Z" });
      else node = svg("circle", { cx: 0, cy: 0, r: it[0] === "keep" ? 4.5 : 3 });
      node.setAttribute("class", "pt " + it[0]);
      icon.appendChild(node);
      li.appendChild(icon);
      li.appendChild(document.createTextNode(" " + it[1] + " " + fmtInt(counts[it[0]] || 0)));
      ul.appendChild(li);
    });
    var f = el("li");
    f.appendChild(el("span", { "class": "swatch frontier-swatch", "aria-hidden": "true" }));
    f.appendChild(document.createTextNode(" frontier (best kept)"));
    ul.appendChild(f);
    var b = el("li");
    b.appendChild(el("span", { "class": "swatch band-swatch", "aria-hidden": "true" }));
    b.appendChild(document.createTextNode(" baseline ± noise"));
    ul.appendChild(b);
    var k = el("li");
    k.appendChild(el("span", { "class": "swatch bar-swatch", "aria-hidden": "true" }));
    k.appendChild(document.createTextNode(" bar to keep"));
    ul.appendChild(k);
  }

  // hover and click: the nearest point within reach, found by binary search over x
  function nearest(px, py) {
    var xs = chart.xs, lo = 0, hi = xs.length;
    if (!hi) return null;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (xs[mid] < px) lo = mid + 1; else hi = mid; }
    var best = null, bd = 14 * 14;
    for (var i = lo; i < xs.length && xs[i] - px <= 14; i++) bd = check(i);
    for (i = lo - 1; i >= 0 && px - xs[i] <= 14; i--) bd = check(i);
    function check(j) {
      var p = chart.pts[j], dx = p.x - px, dy = p.y - py, d = dx * dx + dy * dy;
      if (d < bd || (d === bd && best && p.r.st === "keep")) { best = p; return d; }
      return bd;
    }
    return best;
  }

  var pinned = false, lastPointer = "mouse";

  function showTooltip(p, clientX, clientY) {
    var r = p.r, tip = $("tooltip");
    tip.textContent = "";
    var head = el("div", { "class": "tip-head" });
    head.appendChild(el("span", { "class": "badge " + r.st }, STATUS_LABEL[r.st] || r.st));
    head.appendChild(document.createTextNode(" #" + r.n + " · " + fmtDate(r.t) + " UTC"));
    tip.appendChild(head);
    tip.appendChild(el("div", { "class": "tip-hyp" }, r.h || "(no hypothesis)"));
    var nums = [];
    if (isNum(r.v)) nums.push("val_bpb " + r.v.toFixed(5) + (p.off ? " (off the scale)" : ""));
    if (isNum(r.d)) nums.push(deltaText(r, 5) + (isNum(r.th) ? " (needed −" + r.th.toFixed(5) + ")" : ""));
    if (isNum(r.nz)) nums.push((isNum(r.np) ? "σ_d " : "noise ±") + r.nz.toFixed(5));
    if (nums.length) tip.appendChild(el("div", { "class": "tip-nums" }, nums.join(" · ")));
    if (r.r && r.st !== "keep" && r.st !== "discard") tip.appendChild(el("div", { "class": "tip-reason" }, r.r));
    var pr = safeHref(r.pr);
    if (pinned && pr) {
      var a = el("a", { href: pr, target: "_blank", rel: "noopener noreferrer" }, "Open PR" + (r.pn ? " #" + r.pn : "") + " ↗");
      tip.appendChild(a);
    } else {
      tip.appendChild(el("div", { "class": "tip-hint" }, pr ? "click to open the PR" + (r.pn ? " #" + r.pn : "") : "no PR"));
    }
    tip.hidden = false;
    tip.classList.toggle("pinned", pinned);
    var box = $("progress").getBoundingClientRect();
    var tw = tip.offsetWidth, th = tip.offsetHeight;
    var left = clientX - box.left + 14, top = clientY - box.top + 14;
    if (left + tw > box.width - 4) left = Math.max(4, clientX - box.left - tw - 14);
    if (top + th > box.height - 4) top = Math.max(4, clientY - box.top - th - 14);
    tip.style.left = left + "px";
    tip.style.top = top + "px";
    var ring = document.getElementById("hover-ring");
    if (ring) { ring.setAttribute("cx", p.x); ring.setAttribute("cy", p.y); ring.classList.add("on"); }
  }

  function hideTooltip() {
    var tip = $("tooltip");
    tip.hidden = true;
    pinned = false;
    var ring = document.getElementById("hover-ring");
    if (ring) ring.classList.remove("on");
  }

  function svgPoint(ev) {
    var rect = chart.svg.getBoundingClientRect();
    var scale = chart.W / rect.width;
    return [(ev.clientX - rect.left) * scale, (ev.clientY - rect.top) * scale * 1];
  }

  function wireChart() {
    var box = $("chart");
    box.addEventListener("pointermove", function (ev) {
      if (!chart.svg || pinned) return;
      lastPointer = ev.pointerType || "mouse";
      var q = svgPoint(ev), p = nearest(q[0], q[1]);
      if (p) { showTooltip(p, ev.clientX, ev.clientY); box.classList.toggle("clickable", !!safeHref(p.r.pr)); }
      else { hideTooltip(); box.classList.remove("clickable"); }
    });
    box.addEventListener("pointerleave", function () { if (!pinned) hideTooltip(); });
    box.addEventListener("pointerdown", function (ev) { lastPointer = ev.pointerType || "mouse"; });
    box.addEventListener("click", function (ev) {
      if (!chart.svg) return;
      var q = svgPoint(ev), p = nearest(q[0], q[1]);
      if (!p) { hideTooltip(); return; }
      var pr = safeHref(p.r.pr);
      if (lastPointer === "touch" || !pr) {  // on a phone a tap shows the details; the PR is a link in them
        pinned = true;
        showTooltip(p, ev.clientX, ev.clientY);
        return;
      }
      window.open(pr, "_blank", "noopener");
    });
    document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") hideTooltip(); });
    document.addEventListener("click", function (ev) {
      if (pinned && !$("tooltip").contains(ev.target) && !box.contains(ev.target)) hideTooltip();
    });
    $("y-range").addEventListener("change", function () { state.yRange = this.value; drawChart(); });
    var t = null, lastW = window.innerWidth;
    window.addEventListener("resize", function () {
      if (window.innerWidth === lastW) return;
      lastW = window.innerWidth;
      clearTimeout(t);
      t = setTimeout(drawChart, 150);
    });
  }

  // --- the experiments table -----------------------------------------------------------------------

  var COLUMNS = [
    { key: "n", label: "#", num: true },
    { key: "t", label: "When (UTC)", num: true, cls: "opt-sm" },
    { key: "st", label: "Status" },
    { key: "v", label: "val_bpb", num: true },
    { key: "d", label: "Δ vs base", num: true, title: "candidate − baseline; negative is better" },
    { key: "h", label: "Hypothesis", cls: "wide" },
    { key: "s", label: "Device", cls: "opt-md", title: "GPU type and runner" },
    { key: "usd", label: "Cost", num: true, cls: "opt-md", title: "compute + LLM dollars; GPU minutes below" },
    { key: "links", label: "Links", nosort: true }
  ];

  function renderTableChrome() {
    var head = $("table-head");
    COLUMNS.forEach(function (c) {
      var th = el("th", { scope: "col", "class": (c.cls || "") + (c.num ? " num" : ""), "data-key": c.key, title: c.title || null });
      if (c.nosort) { th.textContent = c.label; }
      else {
        var b = el("button", { type: "button", "class": "sort" }, c.label);
        b.addEventListener("click", function () {
          if (state.sortKey === c.key) state.sortDir = -state.sortDir;
          else { state.sortKey = c.key; state.sortDir = c.key === "h" || c.key === "rn" || c.key === "s" ? 1 : -1; }
          state.page = 0;
          renderTable();
        });
        th.appendChild(b);
      }
      head.appendChild(th);
    });

    var counts = {};
    ROWS.forEach(function (r) { counts[r.st] = (counts[r.st] || 0) + 1; });
    var chips = $("status-filter");
    STATUS_ORDER.forEach(function (st) {
      if (!counts[st]) return;
      var b = el("button", { type: "button", "class": "chip " + st, "data-status": st, "aria-pressed": "false" });
      b.appendChild(el("span", { "class": "dot", "aria-hidden": "true" }));
      b.appendChild(document.createTextNode(STATUS_LABEL[st] + " "));
      b.appendChild(el("span", { "class": "chip-count" }, fmtInt(counts[st])));
      b.addEventListener("click", function () {
        if (state.statuses[st]) delete state.statuses[st]; else state.statuses[st] = true;
        b.setAttribute("aria-pressed", state.statuses[st] ? "true" : "false");
        state.page = 0;
        renderTable();
      });
      chips.appendChild(b);
    });

    var runners = {};
    ROWS.forEach(function (r) { if (r.rn) runners[r.rn] = (runners[r.rn] || 0) + 1; });
    Object.keys(runners).sort().forEach(function (k) {
      $("runner-filter").appendChild(el("option", { value: k }, k + " (" + fmtInt(runners[k]) + ")"));
    });
    SERIES.forEach(function (s, i) {
      $("device-filter").appendChild(el("option", { value: String(i) }, shortDevice(s.key) + " (" + fmtInt(s.experiments) + ")"));
    });
    $("runner-filter").addEventListener("change", function () { state.runner = this.value; state.page = 0; renderTable(); });
    $("device-filter").addEventListener("change", function () { state.device = this.value; state.page = 0; renderTable(); });
    var t = null;
    $("search").addEventListener("input", function () {
      var v = this.value;
      clearTimeout(t);
      t = setTimeout(function () { state.query = v.trim().toLowerCase(); state.page = 0; renderTable(); }, 120);
    });
    $("reset-filters").addEventListener("click", resetFilters);
  }

  function resetFilters() {
    state.statuses = {}; state.runner = ""; state.device = ""; state.query = ""; state.page = 0; state.highlight = null;
    $("runner-filter").value = ""; $("device-filter").value = ""; $("search").value = "";
    Array.prototype.forEach.call($("status-filter").children, function (b) { b.setAttribute("aria-pressed", "false"); });
    renderTable();
  }

  function filtered() {
    var sts = Object.keys(state.statuses), any = sts.length > 0;
    var q = state.query, dev = state.device === "" ? null : +state.device;
    return ROWS.filter(function (r) {
      if (any && !state.statuses[r.st]) return false;
      if (state.runner && r.rn !== state.runner) return false;
      if (dev !== null && r.s !== dev) return false;
      if (q) {
        var hay = (r.h + " " + r.id + " " + (r.r || "") + " " + (r.c || "") + " " + (r.pn ? "#" + r.pn : "")).toLowerCase();
        if (hay.indexOf(q) < 0) return false;
      }
      return true;
    });
  }

  function sortKeyOf(r, key) {
    if (key === "st") return STATUS_ORDER.indexOf(r.st);
    if (key === "s") return SERIES[r.s] ? SERIES[r.s].key : "";
    if (key === "h") return (r.h || "").toLowerCase();
    return r[key];
  }

  function sorted(rows) {
    var key = state.sortKey, dir = state.sortDir;
    var keyed = rows.map(function (r) { return [sortKeyOf(r, key), r]; });
    keyed.sort(function (a, b) {
      var x = a[0], y = b[0];
      var xn = x === null || x === undefined || x === "", yn = y === null || y === undefined || y === "";
      if (xn || yn) return xn && yn ? a[1].n - b[1].n : xn ? 1 : -1;  // empty values last, both ways
      if (x < y) return -dir;
      if (x > y) return dir;
      return a[1].n - b[1].n;
    });
    return keyed.map(function (k) { return k[1]; });
  }

  function link(href, text, title) {
    var h = safeHref(href);
    if (!h) return null;
    return el("a", { href: h, target: "_blank", rel: "noopener noreferrer", title: title || null }, text);
  }

  function renderRow(r) {
    var tr = el("tr", { "data-n": r.n, "data-status": r.st, id: "row-" + r.id });
    if (state.highlight === r.id) tr.className = "hl";
    tr.appendChild(el("td", { "class": "num c-n" }, String(r.n)));
    tr.appendChild(el("td", { "class": "num opt-sm nowrap c-t", title: fmtDate(r.t) + " UTC" }, fmtDate(r.t).slice(5)));
    var st = el("td", { "class": "c-st" });
    st.appendChild(el("span", { "class": "badge " + r.st, title: r.cf ? "confirmed by a second run" : null },
      (STATUS_LABEL[r.st] || r.st) + (r.cf ? " ✓" : "")));
    tr.appendChild(st);
    tr.appendChild(el("td", { "class": "num mono c-v" }, isNum(r.v) ? r.v.toFixed(5) : "—"));
    var dcls = "num mono c-d" + (isNum(r.d) ? (r.st === "keep" ? " good" : "") : "");
    var dtitle = isNum(r.d) ? deltaText(r, 5) : "";
    if (isNum(r.th)) dtitle += "; needed −" + r.th.toFixed(5);
    if (isNum(r.nz)) dtitle += (isNum(r.np) ? ", σ_d " : ", noise ±") + r.nz.toFixed(5);
    var dcell = el("td", { "class": dcls, title: dtitle || null }, fmtSigned(r.d, 5));
    if (isNum(r.lo) && isNum(r.hi)) {
      dcell.appendChild(el("div", { "class": "sub ci" }, "[" + fmtSigned(r.lo, 4) + ", " + fmtSigned(r.hi, 4) + "]"));
    }
    if (isNum(r.np)) dcell.appendChild(el("div", { "class": "sub" }, r.np + (r.np === 1 ? " pair" : " pairs")));
    tr.appendChild(dcell);
    var h = el("td", { "class": "wide c-h" });
    var hyp = el("div", { "class": "hyp" }, r.h || "(no hypothesis)");
    if ((r.h || "").length > 160 || /\n/.test(r.h || "")) {  // long: three lines, a click shows all
      hyp.className = "hyp clamp";
      hyp.setAttribute("tabindex", "0");
      hyp.setAttribute("role", "button");
      hyp.setAttribute("aria-expanded", "false");
      var toggle = function () {
        var open = hyp.classList.toggle("open");
        hyp.setAttribute("aria-expanded", open ? "true" : "false");
      };
      hyp.addEventListener("click", toggle);
      hyp.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } });
    }
    h.appendChild(hyp);
    if (r.r) h.appendChild(el("div", { "class": "reason" }, r.r));
    tr.appendChild(h);
    var where = el("td", { "class": "opt-md nw c-dev", title: SERIES[r.s] ? SERIES[r.s].key : null },
      SERIES[r.s] ? tinyDevice(SERIES[r.s].device) : "");
    if (r.rn) where.appendChild(el("div", { "class": "sub" }, r.rn));
    tr.appendChild(where);
    var cost = el("td", { "class": "num opt-md nw c-usd" }, fmtUsd(r.usd));
    if (isNum(r.g) && r.g > 0) cost.appendChild(el("div", { "class": "sub" }, (r.g / 60).toFixed(1) + " GPU-min"));
    tr.appendChild(cost);
    var links = el("td", { "class": "links c-links" });
    var items = [];
    var pr = link(r.pr, "PR" + (r.pn ? " #" + r.pn : ""), "pull request");
    if (pr) items.push(pr);
    var repo = repoOf(r), sha = r.mc || r.c;
    if (sha) {
      var cl = repo ? link(repo + "/commit/" + sha, shortSha(sha), (r.mc ? "merged commit " : "candidate commit ") + sha)
        : el("code", { title: sha }, shortSha(sha));
      items.push(cl);
    }
    var run = link(r.run, "run", "GitHub Actions run");
    if (run) items.push(run);
    items.forEach(function (it) { var d = el("div"); d.appendChild(it); links.appendChild(d); });
    tr.appendChild(links);
    return tr;
  }

  function renderTable() {
    var body = $("table-body");
    Array.prototype.forEach.call($("table-head").children, function (th) {
      var k = th.getAttribute("data-key");
      if (k === state.sortKey) th.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    if (!ROWS.length) {
      body.textContent = "";
      $("table").hidden = true;
      $("table-empty").hidden = false;
      $("table-empty").textContent = "The ledger has no experiments yet.";
      $("table-count").textContent = "";
      $("pager").textContent = "";
      document.querySelector("#experiments .filters").hidden = true;
      return;
    }
    var rows = sorted(filtered());
    var pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * PAGE_SIZE, slice = rows.slice(start, start + PAGE_SIZE);
    var frag = document.createDocumentFragment();
    slice.forEach(function (r) { frag.appendChild(renderRow(r)); });
    body.textContent = "";
    body.appendChild(frag);
    $("table").hidden = false;
    var empty = $("table-empty");
    empty.hidden = rows.length > 0;
    empty.textContent = rows.length ? "" : "No experiment matches these filters.";
    $("table-count").textContent = rows.length
      ? "Showing " + fmtInt(start + 1) + "–" + fmtInt(start + slice.length) + " of " + fmtInt(rows.length) +
        (rows.length !== ROWS.length ? " (filtered from " + fmtInt(ROWS.length) + ")" : "")
      : "0 of " + fmtInt(ROWS.length);
    renderPager(pages);
  }

  function renderPager(pages) {
    var nav = $("pager");
    nav.textContent = "";
    if (pages < 2) return;
    function btn(label, page, disabled, aria) {
      var b = el("button", { type: "button", "class": "btn", "aria-label": aria || null }, label);
      b.disabled = disabled;
      b.addEventListener("click", function () { state.page = page; renderTable(); $("experiments").scrollIntoView({ block: "start" }); });
      nav.appendChild(b);
    }
    btn("«", 0, state.page === 0, "first page");
    btn("‹ Prev", state.page - 1, state.page === 0, "previous page");
    nav.appendChild(el("span", { "class": "page-info" }, "page " + fmtInt(state.page + 1) + " of " + fmtInt(pages)));
    btn("Next ›", state.page + 1, state.page >= pages - 1, "next page");
    btn("»", pages - 1, state.page >= pages - 1, "last page");
  }

  // #exp-<id> (the learnings link experiments this way): show that row
  function followHash() {
    var m = /^#exp-(.+)$/.exec(decodeURIComponent(location.hash || ""));
    if (!m) return;
    var id = m[1];
    var row = ROWS.filter(function (r) { return r.id === id; })[0];
    if (!row) return;
    resetFilters();
    state.query = id.toLowerCase();
    $("search").value = id;
    state.highlight = id;
    renderTable();
    var tr = document.getElementById("row-" + id);
    if (tr) tr.scrollIntoView({ block: "center" });
  }

  // --- go --------------------------------------------------------------------------------------------

  function init() {
    var built = $("built-at");
    built.textContent = (data.meta.built_at || "").replace("T", " ").replace("+00:00", " UTC");
    built.setAttribute("datetime", data.meta.built_at || "");
    renderWarnings();
    renderFigures();
    renderSeriesSwitch();
    wireChart();
    drawChart();
    renderTableChrome();
    renderTable();
    window.addEventListener("hashchange", followHash);
    followHash();
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
