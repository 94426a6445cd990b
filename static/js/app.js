// Release Center front-end glue. No inline scripts: the page's Content-Security-Policy forbids them.
(function () {
  "use strict";

  // Live events. An element with data-live-topic opens one EventSource for that topic; every event
  // is re-dispatched on the element as "rc-live" (htmx fragments refresh on it with
  // hx-trigger="rc-live from:closest [data-live-topic]") and can be read from event.detail.
  // The browser resends Last-Event-ID on reconnect, so nothing is lost or repeated. A hidden tab
  // closes its stream and reopens it, from the last id it saw, when shown again. Ids are stream
  // positions, ascending in the order the events committed.
  function LiveTopic(element) {
    this.element = element;
    this.topic = element.dataset.liveTopic;
    this.lastId = parseInt(element.dataset.lastEventId || "0", 10);
    this.source = null;
  }
  LiveTopic.prototype.open = function () {
    if (this.source) { return; }
    var url = "/events/stream?topic=" + encodeURIComponent(this.topic) + "&last_event_id=" + this.lastId;
    var self = this;
    this.source = new EventSource(url);
    this.source.addEventListener("open", function () { self.element.dataset.liveState = "open"; });
    this.source.addEventListener("error", function () { self.element.dataset.liveState = "reconnecting"; });
    this.source.onmessage = function (ev) { self.deliver(ev); };
  };
  LiveTopic.prototype.deliver = function (ev) {
    var id = parseInt(ev.lastEventId || "0", 10);
    if (id && id <= this.lastId) { return; }
    if (id) { this.lastId = id; this.element.dataset.lastEventId = String(id); }
    var detail = {};
    try { detail = JSON.parse(ev.data); } catch (e) { detail = {raw: ev.data}; }
    this.element.dispatchEvent(new CustomEvent("rc-live", {bubbles: false, detail: detail}));
  };
  LiveTopic.prototype.close = function () {
    if (this.source) { this.source.close(); this.source = null; }
  };

  var topics = [];
  function start() {
    document.querySelectorAll("[data-live-topic]").forEach(function (el) {
      var live = new LiveTopic(el);
      topics.push(live);
      live.open();
    });
  }
  document.addEventListener("visibilitychange", function () {
    topics.forEach(function (t) {
      if (document.hidden) { t.close(); } else { t.open(); }
    });
  });

  // A live refresh never throws away what someone is typing: while a field inside the region
  // being refreshed has focus and content, the refresh waits, and runs once the field is left.
  document.addEventListener("htmx:beforeRequest", function (ev) {
    var elt = ev.detail.elt;
    var active = document.activeElement;
    if (!elt || !active || !elt.contains(active)) { return; }
    if (!/^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) || !active.value) { return; }
    ev.preventDefault();
    active.addEventListener("focusout", function () {
      var topic = document.querySelector("[data-live-topic]");
      if (topic) { topic.dispatchEvent(new CustomEvent("rc-live", {detail: {deferred: true}})); }
    }, {once: true});
  });

  // Confirmation for destructive forms: <form data-confirm="...">.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      ev.preventDefault();
    }
  }, true);

  document.addEventListener("DOMContentLoaded", start);
})();
