// Health pages: "Run now" shows that a run is under way until its result arrives live.
// The run itself is an htmx POST (hx-swap="none"); the result comes back as a "check.ran"
// event on the check's topic, which app.js re-dispatches as "rc-live" on the wrapper.
(function () {
  "use strict";

  function busy(button, on) {
    if (on) {
      button.setAttribute("aria-busy", "true");
      button.disabled = true;
      button.dataset.label = button.dataset.label || button.textContent;
      button.textContent = "Running…";
    } else {
      button.removeAttribute("aria-busy");
      button.disabled = false;
      if (button.dataset.label) { button.textContent = button.dataset.label; }
    }
  }

  document.addEventListener("htmx:beforeRequest", function (ev) {
    var form = ev.detail.elt;
    if (!form || !form.classList || !form.classList.contains("run-now")) { return; }
    var button = form.querySelector("[data-run-now]");
    if (!button) { return; }
    busy(button, true);
    // A worker that never answers must not leave the button stuck.
    window.setTimeout(function () { busy(button, false); }, 90000);
  });

  document.addEventListener("htmx:afterRequest", function (ev) {
    var form = ev.detail.elt;
    if (!form || !form.classList || !form.classList.contains("run-now")) { return; }
    if (!ev.detail.successful) {
      var button = form.querySelector("[data-run-now]");
      if (button) { busy(button, false); }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".check-page[data-live-topic]").forEach(function (page) {
      page.addEventListener("rc-live", function (ev) {
        var verb = ev.detail && ev.detail.verb;
        if (verb !== "check.ran") { return; }
        page.querySelectorAll("[data-run-now]").forEach(function (b) { busy(b, false); });
      });
    });
  });
})();
