// Chat playground: streams a model's answer through the dashboard's /api/chat proxy.
"use strict";

(() => {
  const { el, api, readEvents, number, showProblem } = Anvyl;
  const form = document.getElementById("chat-form");
  const select = document.getElementById("deployment");
  const prompt = document.getElementById("prompt");
  const conversation = document.getElementById("conversation");
  const errorBox = document.getElementById("chat-error");
  const send = document.getElementById("send");
  const abort = document.getElementById("abort");
  const stats = document.getElementById("chat-stats");
  let history = [];
  let controller = null;

  async function loadModels() {
    const wanted = new URLSearchParams(location.search).get("model");
    try {
      const [{ data }, catalog] = await Promise.all([api("/api/models"), api("/api/catalog")]);
      const ready = data.deployments.filter((d) => d.state === "ready");
      const running = new Set(data.deployments.map((d) => d.model_id));
      // Models not running start on the first message (loaded on demand, unloaded when idle).
      const stopped = catalog.data.models.filter((m) => !running.has(m.id));
      select.replaceChildren(
        ...ready.map((d) => el("option", { value: d.name, selected: d.name === wanted }, `${d.name} (${d.model_id})`)),
        ...stopped.map((m) => el("option", { value: m.id, selected: m.id === wanted }, `${m.id} (not loaded: starts on send)`)));
      if (!ready.length && !stopped.length) {
        select.append(el("option", { value: "" }, "No model is ready"));
        showProblem(errorBox, "No model to chat with. Import one first.");
      }
    } catch (err) {
      showProblem(errorBox, err.message);
    }
  }

  function bubble(role, text) {
    const body = el("span", { class: "text" }, text);
    const node = el("div", { class: `msg ${role}`, "data-role": role }, el("span", { class: "who" }, role === "user" ? "You" : "Model"), body);
    conversation.append(node);
    return { node, body };
  }

  async function ask(text) {
    showProblem(errorBox, "");
    history.push({ role: "user", content: text });
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.node.classList.add("streaming");
    controller = new AbortController();
    send.disabled = true;
    abort.disabled = false;
    const started = performance.now();
    let pieces = 0;
    let content = "";
    try {
      const response = await fetch("/api/chat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        signal: controller.signal,
        body: JSON.stringify({
          deployment: select.value,
          messages: history,
          max_tokens: Number.parseInt(document.getElementById("max_tokens").value, 10) || 256,
          temperature: Number.parseFloat(document.getElementById("temperature").value) || 0,
        }),
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
      }
      await readEvents(response, (name, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (name === "problem" || chunk.error) throw new Error((chunk.error && chunk.error.message) || "the stream failed");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          content += delta.content;
          pieces += 1;
          answer.body.textContent = content;
          const seconds = (performance.now() - started) / 1000;
          stats.textContent = `${pieces} chunks · ${number(pieces / Math.max(seconds, 1e-3))} /s`;
        }
      });
      history.push({ role: "assistant", content });
    } catch (err) {
      if (err.name === "AbortError") {
        history.push({ role: "assistant", content });
        answer.body.textContent = `${content} [stopped]`;
      } else {
        history.pop();
        showProblem(errorBox, err.message);
        if (!content) answer.node.remove();
      }
    } finally {
      answer.node.classList.remove("streaming");
      answer.node.setAttribute("data-done", "true");
      send.disabled = false;
      abort.disabled = true;
      controller = null;
      prompt.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    if (!select.value) { showProblem(errorBox, "Choose a model first."); select.focus(); return; }
    prompt.value = "";
    ask(text);
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  abort.addEventListener("click", () => controller && controller.abort());
  document.getElementById("clear").addEventListener("click", () => {
    history = [];
    conversation.replaceChildren();
    stats.textContent = "";
    prompt.focus();
  });

  loadModels();
})();
