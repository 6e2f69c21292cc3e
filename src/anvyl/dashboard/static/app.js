// Anvyl dashboard: helpers shared by every page (DOM, JSON API, server-sent events, charts).
"use strict";

const Anvyl = (() => {
  /** Build an element: el("a", {href: "/x", class: "y"}, "text", child). Text is never HTML. */
  function el(tag, attrs = {}, ...children) {
    const node = tag === "svg" ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An error carrying the dashboard's {error: {message, status}} shape. */
  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Call the JSON API; throws ApiError with the server's message on a failure. */
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
    if (options.json !== undefined) {
      init.method = init.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
      delete init.json;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(`the dashboard does not answer (${err.message})`, 0, "UNAVAILABLE");
    }
    if (response.status === 401) {
      location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
      throw new ApiError("log in first", 401, "UNAUTHENTICATED");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(error.message || text || `HTTP ${response.status}`, response.status, error.code);
    }
    return { status: response.status, data };
  }

  /** Follow a server-sent event stream; `handlers` maps event names to callbacks. */
  function events(path, handlers, { indicator = true } = {}) {
    const source = new EventSource(path);
    const live = document.getElementById("live");
    const show = (state, text) => {
      if (!indicator || !live) return;
      live.className = `live ${state}`;
      live.textContent = text;
    };
    source.onopen = () => show("on", "live");
    source.onerror = () => show("off", source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data), event));
    }
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  /** Read a fetch response of server-sent events, calling onEvent(name, data) for each. */
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        let name = "message";
        const data = [];
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, data.join("\n"));
      }
    }
  }

  function bytes(n) {
    if (!n) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function duration(s) {
    if (!s) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }

  function number(x, digits = 1) {
    if (x === null || x === undefined) return "–";
    return Number(x).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /** A state badge (its class gives the colour; the text says it, so colour is not needed). */
  function badge(state, reason) {
    return el("span", { class: `badge ${state}`, title: reason || null }, state);
  }

  /** Draw a sparkline of `values` into an <svg>; the aria-label carries the numbers. */
  function sparkline(svg, values, { label = "", unit = "" } = {}) {
    const ns = "http://www.w3.org/2000/svg";
    const width = 300, height = 60;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.replaceChildren();
    const base = document.createElementNS(ns, "line");
    base.setAttribute("class", "base");
    base.setAttribute("x1", 0); base.setAttribute("x2", width);
    base.setAttribute("y1", height - 1); base.setAttribute("y2", height - 1);
    svg.append(base);
    const points = values.slice(-150);
    const max = Math.max(1e-9, ...points);
    if (points.length >= 2) {
      const step = width / (points.length - 1);
      const xy = points.map((v, i) => [i * step, height - 2 - (v / max) * (height - 6)]);
      const d = xy.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
      const area = document.createElementNS(ns, "path");
      area.setAttribute("class", "area");
      area.setAttribute("d", `${d}L${width},${height}L0,${height}Z`);
      const line = document.createElementNS(ns, "path");
      line.setAttribute("class", "line");
      line.setAttribute("d", d);
      svg.append(area, line);
    }
    const last = points.length ? points[points.length - 1] : 0;
    const peak = points.length ? Math.max(...points) : 0;
    svg.setAttribute("aria-label", points.length
      ? `${label}: now ${number(last)} ${unit}, peak ${number(peak)} ${unit} over the last ${points.length} samples`
      : `${label}: no data yet`);
  }

  function meter(fraction, label) {
    const pct = Math.max(0, Math.min(100, fraction * 100));
    return el("div", {
      class: `meter${pct > 85 ? " hot" : ""}`, role: "meter", "aria-label": label,
      "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(pct),
    }, el("span", { style: `width:${pct.toFixed(1)}%` }));
  }

  function showProblem(node, message) {
    if (!node) return;
    node.textContent = message || "";
    node.hidden = !message;
  }

  return { el, api, ApiError, events, readEvents, bytes, duration, number, clock, badge, sparkline, meter, showProblem };
})();
