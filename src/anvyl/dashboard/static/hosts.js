// Hosts page: each engine's status, machine usage and the models on it, from the `hosts` stream.
"use strict";

(() => {
  const { el, events, bytes, number, badge, meter, showProblem } = Anvyl;
  const root = document.getElementById("hosts");
  const problem = document.getElementById("problem");

  function usage(label, used, total, text) {
    return [
      el("dt", {}, label),
      el("dd", {}, text, total ? meter(used / total, `${label} used`) : ""),
    ];
  }

  function hostCard(h) {
    const m = h.metrics;
    const facts = [
      el("dt", {}, "Engine"), el("dd", {}, h.reachable ? `Docker ${h.engine_version}` : (h.status_reason || "unreachable")),
      el("dt", {}, "Address"), el("dd", { class: "mono" }, h.address),
      el("dt", {}, "Containers"), el("dd", {}, String(h.running_containers)),
    ];
    if (m) {
      facts.push(
        ...usage("CPU", m.cpu_percent, 100, `${number(m.cpu_percent)} % of ${m.cpu_count} CPUs · load ${number(m.load1, 2)}`),
        ...usage("Memory", m.memory_used_bytes, m.memory_total_bytes, `${bytes(m.memory_used_bytes)} of ${bytes(m.memory_total_bytes)}`),
        ...usage("Disk", m.disk_used_bytes, m.disk_total_bytes, `${bytes(m.disk_used_bytes)} of ${bytes(m.disk_total_bytes)} (${m.disk_path})`),
      );
    } else if (h.reachable) {
      facts.push(el("dt", {}, "Machine"), el("dd", {}, `${h.cpus} CPUs · ${bytes(h.memory_bytes)}`));
    }
    const models = h.models.length
      ? el("ul", {}, h.models.map((name) => el("li", {}, el("a", { href: `/models/${encodeURIComponent(name)}` }, name))))
      : el("p", { class: "hint" }, "No models.");
    return el("article", { class: "card", "data-host": h.id, "aria-labelledby": `host-${h.id}` },
      el("div", { class: "card-head" },
        el("h2", { id: `host-${h.id}` }, h.name || h.id),
        badge(h.reachable ? "reachable" : "unreachable", h.status_reason)),
      el("p", { class: "sub mono" }, h.id, h.local ? " · this machine" : ""),
      el("dl", { class: "facts" }, facts),
      el("h3", { class: "hint" }, "Models"),
      models,
    );
  }

  events("/api/events/hosts", {
    hosts: (data) => {
      showProblem(problem, "");
      root.replaceChildren(...(data.hosts.length ? data.hosts.map(hostCard) : [el("p", { class: "empty" }, "No hosts registered.")]));
    },
    problem: (data) => showProblem(problem, data.error.message),
  });
})();
