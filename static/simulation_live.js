/* Simulation pages (the run list and one run): progress bars that move with the feed.
 *
 * static/console.js dispatches every change-feed event it receives as
 *   document.dispatchEvent(new CustomEvent("console:change", {detail: event}))
 * and the pages' fragments list "simulation.progress" in data-live-types, so the stream
 * carries those events (simulation-progress.v1 in event.data: {run, twin, progress 0..1,
 * samples_done, samples_target, status}). Each moves the matching bar in place:
 *   <span class="run-progress" data-run="12" data-unit="samples">
 *     <progress max="1" value="0.42">…</progress> <span class="progress-text">…</span></span>
 * writing the same words as the server ("42 % (4,200 / 10,000 samples)", simulation_tags
 * progress_text). When the run finishes, its lifecycle event refreshes the fragment.
 */
(function () {
  "use strict";

  function count(n) { return Number(n || 0).toLocaleString("en-US"); }

  function words(d, unit) {
    var percent = Math.floor(Math.max(0, Math.min(1, Number(d.progress) || 0)) * 100);
    return percent + " % (" + count(d.samples_done) + " / " + count(d.samples_target) + " " +
      unit + ")";
  }

  function move(box, d) {
    var bar = box.querySelector("progress");
    var text = box.querySelector(".progress-text");
    var line = words(d, box.getAttribute("data-unit") || "samples");
    if (bar) {
      bar.value = Math.max(0, Math.min(1, Number(d.progress) || 0));
      bar.textContent = line;
    }
    if (text) { text.textContent = line; }
  }

  document.addEventListener("console:change", function (e) {
    var event = e.detail || {};
    var d = event.data;
    if (event.type !== "simulation.progress" || !d || d.status !== "running") { return; }
    var selector = '.run-progress[data-run="' + String(parseInt(d.run, 10)) + '"]';
    Array.prototype.forEach.call(document.querySelectorAll(selector), function (box) {
      move(box, d);
    });
  });
})();
