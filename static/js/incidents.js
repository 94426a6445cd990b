// Incident pages: the SLA clocks count down every second from the due time the server rendered
// (data-due), and turn red the moment they run out. The breach itself is recorded by the beat
// task on the server; this only keeps what on-call sees current between live refreshes.
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function text(seconds) {
    var over = seconds < 0;
    var s = Math.abs(seconds);
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var rest = s % 60;
    var body = h ? h + " h " + pad(m) + " min" : m + " min " + pad(rest) + " s";
    return body + (over ? " over" : " left");
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (clock) {
      var due = Date.parse(clock.dataset.due);
      if (isNaN(due)) { return; }
      var seconds = Math.round((due - now) / 1000);
      var value = clock.querySelector(".clock-value");
      if (value) { value.textContent = text(seconds); }
      if (seconds < 0 && clock.dataset.state !== "breached") {
        clock.dataset.state = "breached";
        clock.classList.remove("clock-running");
        clock.classList.add("clock-breached");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 1000);
  });
})();

// The incident page follows two streams: the incident's own topic and the project's (where the
// deployments and checks of its environments show up). Each burst of events from either becomes
// one "incident-refresh" on the page, sent once the burst has settled, so the regions refresh
// once and always after the last event (htmx's own throttle would drop a later trigger).
(function () {
  "use strict";
  var timer = null;
  function schedule() {
    if (timer) { window.clearTimeout(timer); }
    timer = window.setTimeout(function () {
      timer = null;
      document.body.dispatchEvent(new CustomEvent("incident-refresh"));
    }, 150);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-incident-stream]").forEach(function (el) {
      el.addEventListener("rc-live", schedule);
    });
  });
})();
