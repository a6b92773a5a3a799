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
})();
