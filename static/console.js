/* OpsTwin console: live pages without polling.
 *
 * The page is rendered with the change feed's cursor (<body data-feed-cursor>). This script
 * follows the feed from that cursor over the WebSocket agents use (/ws/feed, session cookie;
 * aiw/consumers.py), remembering the cursor of every event it receives, and, when an event
 * concerns a fragment of the page, fetches that fragment again (?fragment=<name>) and swaps it
 * in. Fragments declare what concerns them:
 *   <section data-fragment="queue" data-live-types="proposal,anomaly"
 *            data-live-resource="simulation:12"    (optional: one resource only)
 *            data-live-twin="plant">               (optional: the stream asks for one twin
 *                                                   when every fragment names the same one)
 * If the socket drops, it reopens from the last cursor (backing off 1 s, 2 s, … 30 s). If the
 * server says the cursor is gone (close 4410), every fragment is fetched again and the stream
 * reopens from the cursor the fragment responses carry (X-Feed-Cursor). Where a WebSocket
 * cannot be opened at all (a proxy that refuses upgrades), the same feed is followed over
 * Server-Sent Events (GET /subscribe), which resumes with Last-Event-ID by itself.
 * Every event is also dispatched on the document as "console:change" (event.detail: the
 * change-event.v1 object), for page scripts such as the asset charts and progress bars.
 * Overview tiles (<li class="tile" data-asset="7" data-liveness=…>) follow the twin model's
 * "asset.state" events (asset-state.v1 in event.data) in place, without a fetch: liveness,
 * last receipt and the silence deadline; a fragment whose data-live-types lists "asset.state"
 * gets the event type on its stream. Between events, a tile whose data-silent-at passes turns
 * "Silent" (the server's rule: silent after silent_after_seconds without a receipt).
 */
(function () {
  "use strict";
  var body = document.body;
  var cursor = body.getAttribute("data-feed-cursor");
  var feedUrl = body.getAttribute("data-feed-url");
  var socketPath = body.getAttribute("data-feed-socket");
  var status = document.getElementById("live-status");
  var OPERATIONS = ["created", "updated", "deleted"];
  var pending = {};
  var source = null;
  var retryMs = 1000;
  var socketOpened = false;  // a socket opened once on this page: keep to WebSockets
  var socketFailures = 0;

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
    if (event.type === "simulation.progress") {
      return false;  // moved in place by the page's own script (simulation_live.js)
    }
    if (event.type === "asset.state") {
      // Applied to tiles in place (applyState); a fragment is fetched again only when it
      // names the type and the tile's delta changed (a command's outcome, drawn server-side).
      return types.indexOf("asset.state") >= 0 && deltaChanged(el, event.data || {});
    }
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

  var ICONS = {silent: "‖", normal: "✓", unknown: "?"};
  var WORDS = {silent: "Silent", normal: "Normal", unknown: "Liveness unknown"};
  // Tiles that only liveness decides (an anomaly or an action in flight outranks it).
  var BY_LIVENESS = ["normal", "silent", "unknown", "no_data"];

  function ago(iso) {
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    var units = [["d", 86400], ["h", 3600], ["min", 60]];
    for (var k = 0; k < units.length; k++) {
      if (s >= units[k][1]) { return Math.round(s / units[k][1]) + " " + units[k][0]; }
    }
    return Math.round(s) + " s";
  }

  function setTileState(tile, state) {
    if (BY_LIVENESS.indexOf(tile.getAttribute("data-state")) < 0) { return; }
    BY_LIVENESS.forEach(function (c) { tile.classList.remove(c); });
    tile.classList.add(state);
    tile.setAttribute("data-state", state);
    var text = tile.querySelector(".state-text");
    if (text) { text.textContent = WORDS[state]; }
    var icon = tile.querySelector(".state-icon");
    if (icon) { icon.textContent = ICONS[state]; }
  }

  function deltaChanged(el, doc) {
    var tile = el.querySelector('li.tile[data-asset="' + doc.asset + '"]');
    if (!tile) { return false; }
    var delta = (doc.delta || []).map(function (d) { return d.metric + ":" + d.status; }).join(",");
    return delta !== (tile.getAttribute("data-delta") || "");
  }

  function applyState(doc) {
    // asset-state.v1 → the asset's tile, if this page shows it.
    var tile = document.querySelector('li.tile[data-asset="' + doc.asset + '"]');
    if (!tile || !doc.liveness) { return; }
    tile.setAttribute("data-liveness", doc.liveness);
    var last = doc.last_received_at;
    var silentAt = last && doc.silent_after_seconds ?
      new Date(Date.parse(last) + doc.silent_after_seconds * 1000).toISOString() : "";
    tile.setAttribute("data-silent-at", silentAt);
    tile.setAttribute("data-received", last || "");
    var line = tile.querySelector(".live-line");
    if (line && last) {
      line.textContent = doc.liveness === "silent" ? "silent: nothing received for " + ago(last)
        : doc.liveness === "unknown" ? "last received " + ago(last) +
          " ago · sampling interval not known yet"
        : "live · last received " + ago(last) + " ago";
    }
    setTileState(tile, {live: "normal", silent: "silent"}[doc.liveness] || "unknown");
    armSilence(tile.parentNode);
  }

  function handle(event) {
    if (event.cursor) { cursor = event.cursor; }
    if (event.type === "asset.state" && event.data) { applyState(event.data); }
    fragments().forEach(function (el) { if (concerns(el, event)) { schedule(el); } });
    document.dispatchEvent(new CustomEvent("console:change", {detail: event}));
  }

  function onChange(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    handle(event);
  }

  function resync() {
    // The feed cannot resume from our cursor: fetch every fragment, then follow from theirs.
    say("Reconnecting…", "down");
    // One after the other: the first cursor is then the oldest, so the stream resumes before
    // anything any fragment may have missed (a repeat only refetches a fragment).
    fragments().reduce(function (chain, el) {
      return chain.then(function (first) {
        return refresh(el).then(function (next) { return first || next; });
      });
    }, Promise.resolve(null)).then(function (first) {
      if (first) { cursor = first; }
      later();
    });
  }

  function later() {
    window.setTimeout(open, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
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

  function wantedTwin() {
    // One twin when every fragment names the same one (data-live-twin): the server filters.
    var twins = fragments().map(function (el) { return el.getAttribute("data-live-twin"); });
    var first = twins[0];
    return first && twins.every(function (t) { return t === first; }) ? first : null;
  }

  function query() {
    var types = wantedTypes(), twin = wantedTwin();
    return "?since=" + encodeURIComponent(cursor) +
      (types && types.length ? "&types=" + encodeURIComponent(types.join(",")) : "") +
      (twin ? "&twin=" + encodeURIComponent(twin) : "");
  }

  function open() {
    if (socketPath && window.WebSocket && (socketOpened || socketFailures < 2)) {
      openSocket();
    } else {
      openEventSource();
    }
  }

  // Close codes of /ws/feed (aiw/consumers.py): 4410 cursor gone, 4401 not signed in (or
  // access ended), 4429 too many streams, 4408 too slow (resume from the cursor).
  function openSocket() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + socketPath + query());
    var opened = false, healthy = null;
    function settled() {  // the server kept the stream: only now forget earlier failures
      window.clearTimeout(healthy);
      socketFailures = 0;
      retryMs = 1000;
    }
    socket.onopen = function () {
      // The server accepts first and may then refuse (too many streams, cursor gone): the
      // backoff is reset once the stream has lasted a while or carried an event.
      opened = socketOpened = true;
      healthy = window.setTimeout(settled, 5000);
      say("Live", "up");
    };
    socket.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type !== "aiw.error") { settled(); }
      if (event.type === "aiw.reconnect") {
        if (event.cursor) { cursor = event.cursor; }
        return;
      }
      if (event.type === "aiw.error") { return; }  // the close code that follows decides
      handle(event);
    };
    socket.onclose = function (close) {
      window.clearTimeout(healthy);
      if (close.code === 4410) { resync(); return; }
      if (close.code === 4401) { say("Signed out: reload the page", "down"); return; }
      if (close.code === 4400 || close.code === 4403) {
        say("Live updates refused: reload the page", "down");
        return;
      }
      if (!opened && close.code !== 4429) { socketFailures += 1; }
      say(close.code === 4429 ? "Too many live pages open: retrying" : "Reconnecting…", "down");
      later();
    };
  }

  function openEventSource() {
    var types = wantedTypes();
    source = new EventSource(feedUrl + query(), {withCredentials: true});
    source.onopen = function () { retryMs = 1000; say("Live", "up"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { source.close(); resync(); }
      else { say("Reconnecting…", "down"); }
    };
    var resources = types || ["twin", "asset", "anomaly", "proposal", "simulation", "policy",
                              "whatif_model", "calibration", "asset.state"];
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
      if (tile.silenceTimer) { window.clearTimeout(tile.silenceTimer); tile.silenceTimer = null; }
      if (isNaN(at) || tile.getAttribute("data-liveness") !== "live") { return; }
      tile.silenceTimer = window.setTimeout(function () {
        tile.silenceTimer = null;
        if (tile.getAttribute("data-liveness") !== "live") { return; }
        tile.setAttribute("data-liveness", "silent");
        var line = tile.querySelector(".live-line");
        var last = tile.getAttribute("data-received");
        if (line && last) { line.textContent = "silent: nothing received for " + ago(last); }
        setTileState(tile, "silent");
      }, Math.max(0, at - now) + 500);
    });
  }

  // Approving a HIGH or CRITICAL proposal asks once more (forms with data-confirm).
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  armSilence(document);
  if (cursor && (socketPath || feedUrl) && fragments().length) { open(); }
  else if (status) { status.hidden = true; }  // nothing on this page follows the feed
})();
