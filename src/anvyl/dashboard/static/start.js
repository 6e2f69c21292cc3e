// Start page: the form posts to the same service call as `anvyl model start`; errors inline.
// The pull form runs `anvyl model pull`'s service call and follows its progress the same way.
"use strict";

(() => {
  const { el, api, events, clock, showProblem } = Anvyl;
  const form = document.getElementById("start-form");
  const formError = document.getElementById("form-error");
  const submit = document.getElementById("submit");
  const panel = document.getElementById("progress-panel");
  const progress = document.getElementById("progress");
  const result = document.getElementById("result");
  const FIELDS = ["model_id", "name", "port", "memory", "host_id", "cpus", "ctx", "api_key"];

  async function loadCatalog() {
    const modelSelect = document.getElementById("model_id");
    const hostSelect = document.getElementById("host_id");
    try {
      const { data } = await api("/api/catalog");
      modelSelect.replaceChildren(...data.models.map((m) =>
        el("option", { value: m.id }, `${m.id} (${m.architecture}, ${m.quantization}${m.running ? `, ${m.running} running` : ""})`)));
      if (!data.models.length) {
        modelSelect.append(el("option", { value: "" }, "No models: import one with anvyl model import"));
      }
      hostSelect.replaceChildren(...data.hosts.map((h) =>
        el("option", { value: h.id }, `${h.name || h.id}${h.local ? " (this machine)" : ""}`)));
    } catch (err) {
      showProblem(formError, `Cannot load the models: ${err.message}`);
    }
  }

  /** Mark the field the server's message is about (the message itself is shown above). */
  function markField(message) {
    const text = message.toLowerCase();
    const guesses = [["memory", "memory"], ["port", "port"], ["cpus", "cpus"], ["ctx", "ctx"],
      ["container name", "name"], ["named", "name"], ["api key", "api_key"], ["host", "host_id"],
      ["model", "model_id"]];
    const hit = guesses.find(([word]) => text.includes(word));
    if (!hit) return null;
    const input = document.getElementById(hit[1]);
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-errormessage", "form-error");
    return input;
  }

  function values() {
    const data = new FormData(form);
    const body = {};
    for (const key of FIELDS) {
      const raw = (data.get(key) || "").toString();
      const value = key === "api_key" ? raw : raw.trim();  // a key is sent exactly as typed
      if (value === "") continue;
      body[key] = ["port", "ctx"].includes(key) ? Number.parseInt(value, 10)
        : key === "cpus" ? Number.parseFloat(value) : value;
    }
    return body;
  }

  function addProgress(phase, message, t) {
    progress.append(el("li", {}, el("time", {}, clock(t || Date.now() / 1000)), el("span", { class: "phase" }, phase), message));
  }

  function followJob(job) {
    const source = events(job.events, {
      progress: (e) => addProgress(e.phase, e.message, e.t),
      ready: (d) => {
        source.close();
        submit.disabled = false;
        const href = `/models/${encodeURIComponent(d.name)}`;
        result.replaceChildren(el("p", { class: "notice" }, `${d.name} is ready at ${d.url}. `,
          el("a", { href, id: "ready-link" }, "Open it"), " or ",
          el("a", { href: `/playground?model=${encodeURIComponent(d.name)}` }, "chat with it"), "."));
        document.getElementById("ready-link").focus();
      },
      failed: (e) => {
        source.close();
        submit.disabled = false;
        showProblem(formError, e.error.message);
        markField(e.error.message);
        result.replaceChildren();
      },
    }, { indicator: false });
  }

  form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(formError, "");
    for (const key of FIELDS) document.getElementById(key).removeAttribute("aria-invalid");
    submit.disabled = true;
    try {
      const { data } = await api("/api/models", { json: values() });
      panel.hidden = false;
      progress.replaceChildren();
      result.replaceChildren(el("p", { class: "hint" }, "Loading the model…"));
      followJob(data);
    } catch (err) {
      submit.disabled = false;
      showProblem(formError, err.message);
      (markField(err.message) || formError).focus?.();
    }
  });

  const pullForm = document.getElementById("pull-form");
  const pullError = document.getElementById("pull-error");
  const pullSubmit = document.getElementById("pull-submit");
  const pullProgress = document.getElementById("pull-progress");
  const pullBar = document.getElementById("pull-bar");
  const pullStep = document.getElementById("pull-step");
  const pullResult = document.getElementById("pull-result");

  function pullFailed(message) {
    pullSubmit.disabled = false;
    pullProgress.hidden = true;
    showProblem(pullError, message);
  }

  pullForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(pullError, "");
    pullResult.replaceChildren();
    const data = new FormData(pullForm);
    const body = {};
    for (const key of ["repo", "file", "name"]) {
      const value = (data.get(key) || "").toString().trim();
      if (value) body[key] = value;
    }
    if (!body.repo) {
      showProblem(pullError, "give a repository: OWNER/NAME");
      return;
    }
    pullSubmit.disabled = true;
    pullBar.style.width = "0%";
    pullStep.textContent = "Listing the repository…";
    pullProgress.hidden = false;
    let job;
    try {
      ({ data: job } = await api("/api/pulls", { json: body }));
    } catch (err) {
      pullFailed(err.message);
      return;
    }
    const source = events(job.events, {
      progress: (e) => {
        pullBar.style.width = `${Math.round((e.fraction || 0) * 100)}%`;
        pullStep.textContent = e.message;
      },
      ready: (m) => {
        source.close();
        pullSubmit.disabled = false;
        pullProgress.hidden = true;
        pullResult.replaceChildren(el("p", { class: "notice", id: "pull-done" },
          `Pulled ${m.id} (${m.architecture}, ${m.quantization}${m.origin ? `, ${m.origin}` : ""}).`));
        loadCatalog().then(() => { document.getElementById("model_id").value = m.id; });
      },
      failed: (e) => {
        source.close();
        pullFailed(e.error.message);
      },
    }, { indicator: false });
  });

  loadCatalog();
})();
