// Models page: one card per deployment, updated in place from the `models` event stream.
"use strict";

(() => {
  const { el, events, bytes, duration, number, badge, sparkline, meter, showProblem } = Anvyl;
  const list = document.getElementById("deployments");
  const empty = document.getElementById("empty");
  const problem = document.getElementById("problem");
  const cards = new Map();

  function field(card, name) {
    return card.querySelector(`[data-field="${name}"]`);
  }

  function makeCard(d) {
    const href = `/models/${encodeURIComponent(d.name)}`;
    const card = el("article", { class: "card", "data-deployment": d.name, "aria-labelledby": `h-${d.id}` },
      el("div", { class: "card-head" },
        el("h2", { id: `h-${d.id}` }, el("a", { href }, d.name)),
        el("span", { "data-field": "state" })),
      el("p", { class: "sub" },
        el("span", { "data-field": "model" }), " · ",
        el("a", { "data-field": "url", href: d.url, rel: "noreferrer" }, d.url)),
      el("dl", { class: "facts" },
        el("dt", {}, "Host"), el("dd", { "data-field": "host" }),
        el("dt", {}, "Uptime"), el("dd", { "data-field": "uptime" }),
        el("dt", {}, "Unloads"), el("dd", { "data-field": "unloads" }),
        el("dt", {}, "Memory"), el("dd", {}, el("span", { "data-field": "memory" }), el("div", { "data-field": "meter" }))),
      el("div", { class: "stats" },
        el("div", { class: "stat" },
          el("span", { class: "label", id: `tps-${d.id}` }, "Tokens/s"),
          el("span", { class: "value", "data-field": "tps", "data-testid": "tps", "aria-labelledby": `tps-${d.id}` }, "–"),
          el("svg", { class: "chart", "data-field": "tps-chart", role: "img" })),
        el("div", { class: "stat" },
          el("span", { class: "label", id: `rpm-${d.id}` }, "Requests/min"),
          el("span", { class: "value", "data-field": "rpm", "aria-labelledby": `rpm-${d.id}` }, "–"),
          el("svg", { class: "chart alt", "data-field": "rpm-chart", role: "img" }))),
    );
    return card;
  }

  function update(card, d) {
    field(card, "state").replaceChildren(badge(d.state, d.state_reason));
    field(card, "model").textContent = d.model_id;
    const replicas = d.replicas || [];
    field(card, "host").textContent = replicas.length
      ? `${replicas.map((r) => r.node || "unscheduled").join(", ")} (${replicas.filter((r) => r.ready).length}/${replicas.length} replicas ready)`
      : d.host_id;
    field(card, "uptime").textContent = d.state === "ready" ? duration(d.uptime_s) : (d.state_reason || d.state);
    field(card, "unloads").textContent = unloads(d);
    const limit = d.memory_limit_bytes;
    field(card, "memory").textContent = `${bytes(d.memory_used_bytes)} of ${limit ? bytes(limit) : "no limit"}`;
    field(card, "meter").replaceChildren(limit ? meter(d.memory_used_bytes / limit, "memory used of the limit") : "");
    field(card, "tps").textContent = number(d.tokens_per_second);
    const series = d.series || { tokens_per_second: [], requests_per_minute: [] };
    const rpm = series.requests_per_minute;
    field(card, "rpm").textContent = number(rpm.length ? rpm[rpm.length - 1] : 0);
    sparkline(field(card, "tps-chart"), series.tokens_per_second, { label: "tokens per second", unit: "tokens/s" });
    sparkline(field(card, "rpm-chart"), rpm, { label: "requests per minute", unit: "requests/min" });
  }

  /** When an idle deployment unloads: "on demand, in 4m 10s", "when idle", "never". */
  function unloads(d) {
    let when = "never";
    if (d.keep_alive_seconds >= 0) {
      const left = d.unload_at ? d.unload_at - Date.now() / 1000 : -1;
      when = !d.unload_at ? "when idle" : left >= 1 ? `in ${duration(left)}` : "now";
    }
    return d.on_demand ? `on demand, ${when}` : when;
  }

  function render(snapshot) {
    document.getElementById("interval").textContent = number(snapshot.interval, 0);
    showProblem(problem, snapshot.error ? `Cannot list the deployments: ${snapshot.error}` : "");
    const seen = new Set();
    for (const d of snapshot.deployments) {
      seen.add(d.id);
      let card = cards.get(d.id);
      if (!card) {
        card = makeCard(d);
        cards.set(d.id, card);
        list.append(card);
      }
      update(card, d);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) { card.remove(); cards.delete(id); }
    }
    empty.hidden = snapshot.deployments.length > 0;
  }

  events("/api/events/models", { models: render });
})();
