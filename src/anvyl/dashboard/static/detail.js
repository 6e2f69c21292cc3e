// Model detail page: settings, labels, health history, live log tail, stop with confirmation.
"use strict";

(() => {
  const { el, api, events, bytes, duration, number, clock, badge, sparkline, showProblem } = Anvyl;
  const main = document.getElementById("main");
  const name = main.dataset.name;
  const path = encodeURIComponent(name);
  const problem = document.getElementById("problem");
  const logBox = document.getElementById("log");
  const follow = document.getElementById("follow");
  const stopButton = document.getElementById("stop");
  const dialog = document.getElementById("confirm");
  const MAX_LOG_LINES = 2000;
  let stopped = false;
  let logSource = null;
  let modelSource = null;

  document.getElementById("title").textContent = name;
  document.getElementById("crumb").textContent = name;
  document.getElementById("confirm-name").textContent = name;
  document.getElementById("chat-link").href = `/playground?model=${path}`;

  function facts(node, pairs) {
    node.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === "" || v === undefined ? "–" : String(v))]));
  }

  function renderSettings(d) {
    const o = d.options || {};
    facts(document.getElementById("settings"), [
      ["Model", d.model_id],
      ["URL", d.url],
      ["Host", d.host_id],
      ["Port", `${d.bind}:${d.port}`],
      ["Runtime", d.runtime],
      [d.runtime === "process" ? "Process" : "Container", (d.container_id || "").slice(0, 12)],
      ["Image", d.image],
      ["Uptime", duration(d.uptime_s)],
      ["Memory", `${bytes(d.memory_used_bytes)} of ${d.memory_limit_bytes ? bytes(d.memory_limit_bytes) : "no limit"}`],
      ["CPUs", o.cpus || "no limit"],
      ["Context", o.ctx || "the model's"],
      ["API key", o.api_key ? "required" : "none"],
      ["Requests", number(d.requests_total, 0)],
      ["Tokens generated", number(d.generated_tokens_total, 0)],
    ]);
  }

  function renderHealth(events_) {
    const list = document.getElementById("health");
    list.replaceChildren(...events_.slice().reverse().map((e) =>
      el("li", {}, el("time", { datetime: new Date(e.t * 1000).toISOString() }, clock(e.t)), badge(e.state), e.reason || "")));
    if (!events_.length) list.append(el("li", { class: "hint" }, "No samples yet."));
  }

  function renderReplicas(replicas) {
    const panel = document.getElementById("replicas-panel");
    panel.hidden = !replicas.length;
    document.getElementById("replicas").replaceChildren(...replicas.map((r) =>
      el("li", { "data-node": r.node },
        el("span", { class: "phase" }, `#${r.slot}`),
        badge(r.ready ? "ready" : r.state, r.error),
        `${r.node || r.node_id.slice(0, 12) || "unscheduled"}${r.address ? ` (${r.address})` : ""}`,
        r.since ? ` since ${clock(r.since)}` : "",
        r.restarts ? `, ${r.restarts} restart${r.restarts === 1 ? "" : "s"}` : "")));
  }

  function renderLive(d) {
    document.getElementById("state").replaceChildren(badge(d.state, d.state_reason));
    document.getElementById("tps").textContent = number(d.tokens_per_second);
    const s = d.series || { tokens_per_second: [], requests_per_minute: [] };
    const rpm = s.requests_per_minute;
    document.getElementById("rpm").textContent = number(rpm.length ? rpm[rpm.length - 1] : 0);
    sparkline(document.getElementById("tps-chart"), s.tokens_per_second, { label: "tokens per second", unit: "tokens/s" });
    sparkline(document.getElementById("rpm-chart"), rpm, { label: "requests per minute", unit: "requests/min" });
    renderSettings(d);
    renderReplicas(d.replicas || []);
    renderHealth(d.health || []);
  }

  function appendLog(line) {
    document.getElementById("log-empty").hidden = true;
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
    logBox.append(line + "\n");
    while (logBox.childNodes.length > MAX_LOG_LINES) logBox.firstChild.remove();
    if (follow.checked && (atBottom || logBox.childNodes.length < 50)) logBox.scrollTop = logBox.scrollHeight;
  }

  function followLogs() {
    logSource = events(`/api/models/${path}/logs?tail=200`, {
      line: appendLog,
      end: (message) => { appendLog(`— ${message} —`); logSource.close(); },
      problem: (data) => { appendLog(`— ${data.error.message} —`); logSource.close(); },
    }, { indicator: false });
  }

  async function load() {
    try {
      const { data } = await api(`/api/models/${path}`);
      facts(document.getElementById("labels"), Object.entries(data.labels || {}));
      if (data.model_id) renderLive(data);
      followLogs();
    } catch (err) {
      showProblem(problem, err.message);
      stopButton.disabled = true;
      return;
    }
    modelSource = events("/api/events/models", {
      models: (snapshot) => {
        if (stopped) return;
        const d = snapshot.deployments.find((x) => x.name === name);
        if (d) renderLive(d);
        else {
          document.getElementById("state").replaceChildren(badge("gone"));
          showProblem(problem, `${name} is no longer deployed.`);
          stopButton.disabled = true;
        }
      },
    });
  }

  stopButton.addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "stop") { stopButton.focus(); return; }
    stopButton.disabled = true;
    stopButton.textContent = "Stopping…";
    showProblem(problem, "");
    try {
      await api(`/api/models/${path}`, { method: "DELETE" });
      stopped = true;
      if (logSource) logSource.close();
      if (modelSource) modelSource.close();
      document.getElementById("state").replaceChildren(badge("stopped"));
      const done = document.getElementById("done");
      done.replaceChildren(`${name} stopped; its container was removed. `, el("a", { href: "/models" }, "Back to models"));
      done.hidden = false;
      stopButton.textContent = "Stopped";
      done.querySelector("a").focus();
    } catch (err) {
      showProblem(problem, err.message);
      stopButton.disabled = false;
      stopButton.textContent = "Stop…";
    }
  });

  load();
})();
