/* Asset page charts (uPlot, vendored under static/vendor/uplot).
 *
 * Reads <script id="chart-data" type="application/json">: {series: [{metric, unit, t, min, max,
 * avg}], episodes: [[start, end, severity]]}, times in epoch seconds (sensor time, shown in
 * UTC). Each metric: the min..max band of every bucket (spikes survive), its mean as a line,
 * anomaly episodes shaded. Null points (inserted by the server at data gaps) break the lines.
 */
(function () {
  "use strict";
  var holder = document.getElementById("chart-data");
  if (!holder || !window.uPlot) { return; }
  var data = JSON.parse(holder.textContent);
  var SHADE = {critical: "rgba(217,45,32,0.22)", high: "rgba(247,144,9,0.22)",
               medium: "rgba(250,197,21,0.22)", low: "rgba(152,162,179,0.22)"};

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

  function width(el) { return Math.max(280, el.clientWidth - 12); }

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
      hooks: {drawClear: [shadeEpisodes]},
    };
    plots.push([box, new uPlot(opts, [s.t, s.min, s.max, s.avg], box)]);
  });

  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p[1].setSize({width: width(p[0]), height: 200}); });
  });
})();
