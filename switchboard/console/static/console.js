// Redraws the element marked data-refresh from its URL every data-every seconds; a failed
// fetch keeps the last view and says so.
(function () {
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var every = parseFloat(el.getAttribute("data-every") || "3") * 1000;
    setInterval(function () {
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) { el.innerHTML = html; })
        .catch(function (e) { var s = document.getElementById("refresh-state"); if (s) s.textContent = "refresh failed: " + e; });
    }, every);
  });
  // "select all" for the dead-letter list.
  var all = document.getElementById("select-all");
  if (all) all.addEventListener("change", function () {
    document.querySelectorAll("input[name=pointer]").forEach(function (c) { c.checked = all.checked; });
  });
})();
