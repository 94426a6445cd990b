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
