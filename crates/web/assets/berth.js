// Berth's own script: small enhancements only; every page works without it.
(function () {
  // Close the global search dropdown with Escape.
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      var r = document.getElementById("global-results");
      if (r) { r.innerHTML = ""; }
    }
  });
  // Filter selects submit their form when changed.
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("form.filters select, select[data-autosubmit]")) { t.form.requestSubmit(); }
  });
  // A run's page follows the run: its live part is replaced by each server-sent event, until it ends.
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("[data-live]");
    if (!live || !window.EventSource) { return; }
    var ended = function () { var r = live.querySelector(".run-live"); return r && r.getAttribute("data-ended") === "true"; };
    if (ended()) { return; }
    var source = new EventSource(live.getAttribute("data-live"));
    source.addEventListener("run", function (e) {
      live.innerHTML = e.data;
      if (ended()) { source.close(); }
    });
  });
})();

// A form with data-confirm asks first (deleting an app, a user or a team; rotating a secret).
document.addEventListener('submit', function (e) {
  var form = e.target;
  var ask = form && form.getAttribute && form.getAttribute('data-confirm');
  if (ask && !window.confirm(ask)) { e.preventDefault(); }
});
