// Conveyor dashboard: live updates over server-sent events, and local times.
// Every bit of HTML this script inserts was rendered (and escaped) by the
// daemon; text from events is set with textContent only.
"use strict";

(function () {
  const LOG_MAX_BYTES = 2 * 1024 * 1024; // log text kept in a page
  const FLUSH_MS = 50;

  function localTimes(root) {
    for (const el of (root || document).querySelectorAll("time[datetime]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.title = el.textContent;
        el.textContent = when.toLocaleString();
      }
    }
  }

  // An EventSource that is closed while the page is hidden (so background
  // tabs hold no connection) and opened again, from where it was, when the
  // page is shown. open(from) returns a new EventSource.
  function liveStream(open) {
    let source = null;
    let finished = false;
    const state = { last: null, finish() { finished = true; if (source) source.close(); } };
    function start() {
      if (finished || source) return;
      source = open(state.last);
      source.addEventListener("error", () => {
        if (source && source.readyState === EventSource.CLOSED) source = null;
      });
    }
    function stop() {
      if (source) { source.close(); source = null; }
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) stop(); else start();
    });
    if (!document.hidden) start();
    return state;
  }

  function withParam(url, name, value) {
    return url + (url.includes("?") ? "&" : "?") + name + "=" + encodeURIComponent(value);
  }

  // -- the runs page -------------------------------------------------------------------
  function runsPage() {
    const body = document.getElementById("runs-body");
    if (!body || !body.dataset.live) return;
    liveStream(() => {
      const source = new EventSource(body.dataset.live);
      source.addEventListener("rows", (e) => {
        body.innerHTML = JSON.parse(e.data).html;
        localTimes(body);
      });
      return source;
    });
  }

  // -- a run page ----------------------------------------------------------------------
  function setStageStatus(index, status, attempt) {
    const node = document.querySelector('g.node[data-stage="' + index + '"]');
    if (node) {
      node.setAttribute("data-status", status);
      const text = node.querySelector("text.state");
      if (text) {
        let label = node.getAttribute("data-kind") + " · " + status.replace("_", " ");
        if (attempt > 1) label += " · attempt " + attempt;
        text.textContent = label;
      }
    }
    const badge = document.querySelector('tr[data-stage="' + index + '"] .badge');
    if (badge) {
      badge.setAttribute("data-status", status);
      badge.textContent = status.replace("_", " ");
    }
  }

  function runPage() {
    const run = document.getElementById("run");
    if (!run || !run.dataset.live) return;
    const live = liveStream((last) => {
      const after = last !== null ? last : run.dataset.seq;
      const source = new EventSource(withParam(run.dataset.live, "after", after));
      source.addEventListener("stage", (e) => {
        const d = JSON.parse(e.data);
        live.last = d.seq;
        if (d.stage >= 0 && !d.retry) setStageStatus(d.stage, d.status, d.attempt);
      });
      source.addEventListener("run", (e) => {
        live.last = JSON.parse(e.data).seq;
      });
      source.addEventListener("parts", (e) => {
        const parts = JSON.parse(e.data);
        for (const id of Object.keys(parts)) {
          const el = document.getElementById(id);
          if (el) { el.innerHTML = parts[id]; localTimes(el); }
        }
      });
      source.addEventListener("end", () => {
        run.dataset.live = "";
        live.finish();
      });
      return source;
    });
  }

  // -- a stage's log -------------------------------------------------------------------
  function logPage() {
    const log = document.getElementById("log");
    if (!log || !log.dataset.stream) return;
    const follow = document.getElementById("log-follow");
    const range = document.getElementById("log-range");
    const state = document.getElementById("log-state");
    const chunks = Array.from(log.querySelectorAll("span.chunk")).map((el) => ({
      el, offset: Number(el.dataset.offset), end: Number(el.dataset.end),
    }));
    let kept = chunks.reduce((sum, c) => sum + (c.end - c.offset), 0);
    let end = Number(log.dataset.end);
    let pending = [];
    let timer = null;

    function trim() {
      while (kept > LOG_MAX_BYTES && chunks.length > 1) {
        const first = chunks.shift();
        kept -= first.end - first.offset;
        first.el.remove();
      }
      const earlier = document.getElementById("log-earlier");
      if (earlier && chunks.length && chunks[0].offset > 0) {
        const link = document.createElement("a");
        link.id = "log-earlier";
        link.href = withParam(log.dataset.sizeUrl, "offset",
          Math.max(0, chunks[0].offset - 512 * 1024));
        link.textContent = "← earlier output (from byte " + chunks[0].offset + ")";
        earlier.replaceWith(link);
      }
    }

    function flush() {
      timer = null;
      if (!pending.length) return;
      const span = document.createElement("span");
      span.className = "chunk";
      span.innerHTML = pending.map((p) => p.html).join("");
      const chunk = { el: span, offset: pending[0].offset, end: pending[pending.length - 1].end };
      pending = [];
      log.appendChild(span);
      chunks.push(chunk);
      kept += chunk.end - chunk.offset;
      end = chunk.end;
      trim();
      if (range) range.textContent = "bytes " + chunks[0].offset + " to " + end;
      if (follow && follow.checked) log.scrollTop = log.scrollHeight;
    }

    function add(d) {
      pending.push(d);
      if (timer === null) timer = setTimeout(flush, FLUSH_MS);
    }

    if (follow && follow.checked) log.scrollTop = log.scrollHeight;
    const live = liveStream((last) => {
      const from = last !== null ? last : end;
      const source = new EventSource(withParam(log.dataset.stream, "offset", from));
      source.addEventListener("chunk", (e) => {
        const d = JSON.parse(e.data);
        live.last = d.end;
        add(d);
      });
      source.addEventListener("skip", (e) => {
        const d = JSON.parse(e.data);
        flush();
        const note = document.createElement("span");
        note.className = "skipped";
        note.textContent = "\n… " + (d.to - d.from) + " bytes skipped to keep up with the log …\n";
        log.appendChild(note);
        live.last = d.to;
      });
      source.addEventListener("end", (e) => {
        const d = JSON.parse(e.data);
        flush();
        if (d.html) add({ html: d.html, offset: d.end, end: d.end });
        flush();
        const head = document.getElementById("stage-head");
        if (head) { head.innerHTML = d.head; localTimes(head); }
        if (state) state.textContent = "The stage has finished: this is all of its log.";
        log.dataset.stream = "";
        live.finish();
      });
      return source;
    });
  }

  function start() {
    localTimes(document);
    runsPage();
    runPage();
    logPage();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
