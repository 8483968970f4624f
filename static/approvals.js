/* Approval queue: a reject reason being typed survives the live refresh of the cards.
 *
 * static/console.js swaps the cards' HTML when the change feed reports a proposal, anomaly or
 * simulation event; without this, a reason half typed (and the focus in its box) would be lost
 * whenever another proposal changed. Reasons are kept by their box's id (one per proposal),
 * put back after each refresh ("console:refreshed"), and forgotten once their form is sent.
 */
(function () {
  "use strict";
  var drafts = {};
  var focused = null;

  function isReason(el) {
    return el && el.tagName === "TEXTAREA" && el.name === "reason" && el.id;
  }

  document.addEventListener("input", function (event) {
    if (isReason(event.target)) { drafts[event.target.id] = event.target.value; }
  });
  document.addEventListener("focusin", function (event) {
    focused = isReason(event.target) ? event.target.id : null;
  });
  document.addEventListener("submit", function (event) {
    var box = event.target.querySelector && event.target.querySelector("textarea[name=reason]");
    if (box && !event.defaultPrevented) { delete drafts[box.id]; }
  });
  document.addEventListener("console:refreshed", function (event) {
    Object.keys(drafts).forEach(function (id) {
      var box = document.getElementById(id);
      if (box && !box.value) { box.value = drafts[id]; }
    });
    var box = focused && document.getElementById(focused);
    var lost = !document.activeElement || document.activeElement === document.body;
    if (box && lost && event.target.contains(box)) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  });
})();
