/* Asset page charts (uPlot, vendored under static/vendor/uplot).
 *
 * Reads <script id="chart-data" type="application/json">: {series: [{metric, unit, t, min, max,
 * avg}], episodes: [[start, end, severity]], markers: [[t, kind, label, href]],
 * live: {asset, span_s, gap_s} | null}, times in epoch seconds (sensor time, shown in UTC).
 * Each metric: the min..max band of every bucket (spikes survive), its mean as a line,
 * anomaly episodes shaded, executed / verified / rolled back actions as vertical lines with a
 * text label ("▲ executed #12 reduce_load", "↺ rolled back #12"; the page lists them too,
 * with links, under the charts). Null points (inserted by the server at data gaps) break the
 * lines. The list is a live fragment (proposal events): when console.js swaps it in, the
 * markers are redrawn from its <script id="chart-markers"> (the same [[t, kind, label, href]]).
 *
 * Live: on the live ranges (data.live set) static/console.js's "console:change" events of
 * type "asset.state" (asset-state.v1 in event.data) for this asset extend each metric whose
 * reported reading is newer than the chart's last point: appended as one point (min = max =
 * mean = value), after a null point when it is more than live.gap_s after the last one (the
 * server's gap rule), and points older than live.span_s before it are dropped, so "the last
 * hour" stays an hour. A reload gives the bucketed history again.
 */
(function () {
  "use strict";
  var holder = document.getElementById("chart-data");
  if (!holder || !window.uPlot) { return; }
  var data = JSON.parse(holder.textContent);
  var markers = data.markers || [];
  var SHADE = {critical: "rgba(217,45,32,0.22)", high: "rgba(247,144,9,0.22)",
               medium: "rgba(250,197,21,0.22)", low: "rgba(152,162,179,0.22)"};
  var MARK = {executed: "#175cd3", verified: "#067647", rolled_back: "#b42318"};

  function shadeEpisodes(u) {
    var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
    var lo = u.bbox.left, hi = u.bbox.left + u.bbox.width;
    ctx.save();
    data.episodes.forEach(function (ep) {
      var a = Math.max(lo, u.valToPos(ep[0], "x", true));
      var b = Math.min(hi, Math.max(u.valToPos(ep[1], "x", true), a + 2));
      if (b > a) {
        ctx.fillStyle = SHADE[ep[2]] || SHADE.low;
        ctx.fillRect(a, top, b - a, height);
      }
    });
    ctx.restore();
  }

  function drawMarkers(u) {
    // A dashed vertical line per marker and its label beside it, on three staggered rows
    // so that neighbours do not print over each other.
    if (!markers.length) { return; }
    var ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
    var lo = u.bbox.left, hi = u.bbox.left + u.bbox.width;
    var px = window.devicePixelRatio || 1;
    ctx.save();
    ctx.font = Math.round(11 * px) + "px system-ui, sans-serif";
    ctx.textBaseline = "top";
    markers.forEach(function (m, k) {
      var x = Math.round(u.valToPos(m[0], "x", true));
      if (x < lo || x > hi) { return; }
      var colour = MARK[m[1]] || "#344054";
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1.5 * px;
      ctx.setLineDash(m[1] === "rolled_back" ? [2 * px, 3 * px] : [6 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(x + 0.5, top);
      ctx.lineTo(x + 0.5, bottom);
      ctx.stroke();
      var width = ctx.measureText(m[2]).width;
      var tx = x + 3 * px + width > hi ? x - 3 * px - width : x + 3 * px;
      var ty = top + 2 * px + (k % 3) * 14 * px;
      ctx.fillStyle = "rgba(255,255,255,0.85)";
      ctx.fillRect(tx - px, ty - px, width + 2 * px, 13 * px);
      ctx.fillStyle = colour;
      ctx.fillText(m[2], tx, ty);
    });
    ctx.restore();
  }

  function width(el) { return Math.max(280, el.clientWidth - 12); }

  // The newest time drawn, on the figure (data-last-ts, epoch s): what a test or a reader of
  // the page can check without reaching into the chart.
  function drawn(p) {
    var t = p.columns[0];
    p.box.setAttribute("data-last-ts", t.length ? String(t[t.length - 1]) : "");
  }

  var plots = [];
  data.series.forEach(function (s) {
    var box = document.querySelector('figure[data-metric="' + CSS.escape(s.metric) + '"]');
    if (!box) { return; }
    var unit = s.unit ? " [" + s.unit + "]" : "";
    var opts = {
      width: width(box), height: 200,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: {x: {time: true}},
      series: [
        {label: "Sensor time (UTC)"},
        {label: "min" + unit, stroke: "rgba(11,95,255,0.35)", width: 1, points: {show: false}},
        {label: "max" + unit, stroke: "rgba(11,95,255,0.35)", width: 1, points: {show: false}},
        {label: "mean" + unit, stroke: "#0b5fff", width: 1.5, points: {show: false}},
      ],
      bands: [{series: [2, 1], fill: "rgba(11,95,255,0.12)"}],
      axes: [{}, {label: s.metric + unit, size: 70}],
      hooks: {drawClear: [shadeEpisodes], draw: [drawMarkers]},
    };
    var columns = [s.t.slice(), s.min.slice(), s.max.slice(), s.avg.slice()];
    plots.push({box: box, metric: s.metric, columns: columns,
                plot: new uPlot(opts, columns, box)});
    drawn(plots[plots.length - 1]);
  });

  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p.plot.setSize({width: width(p.box), height: 200}); });
  });

  // The list of actions under the charts is a fragment that follows the feed's proposal
  // events (?fragment=markers); when console.js swaps it in, redraw from its markers' JSON.
  document.addEventListener("console:refreshed", function (e) {
    var fresh = e.target && e.target.querySelector && e.target.querySelector("#chart-markers");
    if (!fresh) { return; }
    try { markers = JSON.parse(fresh.textContent) || []; } catch (err) { return; }
    plots.forEach(function (p) { p.plot.redraw(false, false); });
  });

  // --- Live extension from asset.state events ---------------------------------------------

  function append(p, t, value) {
    var c = p.columns, n = c[0].length;
    var last = n ? c[0][n - 1] : null;
    if (last !== null && t <= last) { return false; }  // not newer than what is drawn
    if (last !== null && t - last > data.live.gap_s) {
      c[0].push((last + t) / 2);  // a gap stays a gap, as the server draws it
      c[1].push(null); c[2].push(null); c[3].push(null);
    }
    c[0].push(t); c[1].push(value); c[2].push(value); c[3].push(value);
    if (data.live.span_s) {
      var from = t - data.live.span_s, drop = 0;
      while (drop < c[0].length - 1 && (c[0][drop] < from || c[3][drop] === null)) { drop++; }
      if (drop) { c.forEach(function (column) { column.splice(0, drop); }); }
    }
    return true;
  }

  document.addEventListener("console:change", function (e) {
    var event = e.detail || {};
    var doc = event.data;
    if (!data.live || event.type !== "asset.state" || !doc) { return; }
    if (String(doc.asset) !== String(data.live.asset)) { return; }
    var reported = doc.reported || {};
    plots.forEach(function (p) {
      var r = reported[p.metric];
      if (!r || r.value === null || r.value === undefined || !r.ts) { return; }
      var t = Date.parse(r.ts) / 1000;
      if (isNaN(t)) { return; }
      if (append(p, t, Number(r.value))) { p.plot.setData(p.columns); drawn(p); }
    });
  });
})();
