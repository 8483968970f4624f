/* OpsTwin console: live pages without polling.
 *
 * The page is rendered with the change feed's cursor (<body data-feed-cursor>). This script
 * follows the feed from that cursor over Server-Sent Events (GET /subscribe, session cookie;
 * aiw/sse.py) and, when an event concerns a fragment of the page, fetches that fragment again
 * (?fragment=<name>) and swaps it in. Fragments declare what concerns them:
 *   <section data-fragment="queue" data-live-types="proposal,anomaly"
 *            data-live-resource="simulation:12">   (optional: one resource only)
 * EventSource reconnects by itself after a drop and resends the last event id
 * (Last-Event-ID), so nothing is missed. If the server refuses the cursor (410: pruned), or the
 * stream cannot be opened, every fragment is fetched again and the stream reopens from the
 * cursor the fragment response carries (X-Feed-Cursor).
 * Tiles with data-silent-at turn "Silent" when that moment passes (a local timer, no request).
 */
(function () {
  "use strict";
  var body = document.body;
  var cursor = body.getAttribute("data-feed-cursor");
  var feedUrl = body.getAttribute("data-feed-url");
  var status = document.getElementById("live-status");
  var OPERATIONS = ["created", "updated", "deleted"];
  var pending = {};
  var source = null;
  var retryMs = 2000;

  function fragments() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-fragment]"));
  }

  function say(text, cls) {
    if (!status) { return; }
    status.textContent = text;
    status.className = "live " + cls;
  }

  function typesOf(el) {
    return (el.getAttribute("data-live-types") || "").split(",").filter(Boolean);
  }

  function concerns(el, event) {
    var types = typesOf(el);
    if (types.length && types.indexOf(event.resource_type) < 0 && types.indexOf(event.type) < 0) {
      return false;
    }
    var only = el.getAttribute("data-live-resource");
    return !only || only === event.resource_type + ":" + event.resource_id;
  }

  function fragmentUrl(el) {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", el.getAttribute("data-fragment"));
    return url.toString();
  }

  function refresh(el) {
    return fetch(fragmentUrl(el), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (!response.ok) { return null; }
        var next = response.headers.get("X-Feed-Cursor");
        return response.text().then(function (html) {
          el.innerHTML = html;
          armSilence(el);
          el.dispatchEvent(new CustomEvent("console:refreshed", {bubbles: true}));
          return next;
        });
      })
      .catch(function () { return null; });
  }

  function schedule(el) {
    var name = el.getAttribute("data-fragment");
    if (pending[name]) { return; }
    // Coalesce bursts (a detection run opens several anomalies at once): one fetch.
    pending[name] = window.setTimeout(function () {
      pending[name] = null;
      refresh(el);
    }, 300);
  }

  function onChange(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    fragments().forEach(function (el) { if (concerns(el, event)) { schedule(el); } });
  }

  function resync() {
    // The stream could not resume: fetch every fragment, then follow from their cursor.
    say("Reconnecting…", "down");
    var loads = fragments().map(refresh);
    Promise.all(loads).then(function (cursors) {
      var fresh = cursors.filter(Boolean);
      if (fresh.length) { cursor = fresh[0]; }
      window.setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, 60000);
    });
  }

  function wantedTypes() {
    var all = [];
    fragments().forEach(function (el) {
      var types = typesOf(el);
      if (!types.length) { all = null; }
      if (all) { types.forEach(function (t) { if (all.indexOf(t) < 0) { all.push(t); } }); }
    });
    return all;
  }

  function open() {
    var types = wantedTypes();
    var url = feedUrl + "?since=" + encodeURIComponent(cursor) +
      (types && types.length ? "&types=" + encodeURIComponent(types.join(",")) : "");
    source = new EventSource(url, {withCredentials: true});
    source.onopen = function () { retryMs = 2000; say("Live", "up"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { source.close(); resync(); }
      else { say("Reconnecting…", "down"); }
    };
    var resources = types || ["twin", "asset", "anomaly", "proposal", "simulation", "policy",
                              "whatif_model", "calibration"];
    resources.forEach(function (resource) {
      if (resource.indexOf(".") >= 0) {
        source.addEventListener(resource, onChange);
        return;
      }
      OPERATIONS.forEach(function (op) {
        source.addEventListener(resource + "." + op, onChange);
      });
    });
    source.addEventListener("aiw.error", function () {
      source.close();
      say("Live updates ended: reload the page", "down");
    });
  }

  function armSilence(root) {
    var now = Date.now();
    Array.prototype.slice.call(root.querySelectorAll("[data-silent-at]")).forEach(function (tile) {
      var at = Date.parse(tile.getAttribute("data-silent-at"));
      if (isNaN(at) || tile.classList.contains("silent")) { return; }
      window.setTimeout(function () {
        if (tile.getAttribute("data-state") !== "normal") { return; }
        tile.classList.remove("normal");
        tile.classList.add("silent");
        tile.setAttribute("data-state", "silent");
        var text = tile.querySelector(".state-text");
        if (text) { text.textContent = "Silent"; }
        var icon = tile.querySelector(".state-icon");
        if (icon) { icon.textContent = "‖"; }
      }, Math.max(0, at - now) + 500);
    });
  }

  // Approving a HIGH or CRITICAL proposal asks once more (forms with data-confirm).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  armSilence(document);
  if (cursor && feedUrl && window.EventSource && fragments().length) { open(); }
  else if (status) { status.hidden = true; }  // nothing on this page follows the feed
})();
