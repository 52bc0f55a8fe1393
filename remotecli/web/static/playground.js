// The playground: a prompt to one provider (POST /api/prompts) or several side
// by side (POST /api/perspectives), streamed as SSE over fetch() (EventSource
// cannot POST). One column per provider: text as it streams, tool calls with
// their input then their result, usage and cost from the final result, errors,
// and Stop (aborting the request: the controller cancels the runs in the VM).
import { ApiError, api, CSRF_HEADER, el, formatMs, nextStep } from "./api.js";
import { readEvents } from "./sse.js";

const form = document.getElementById("playground");
const picker = document.getElementById("known-users");
const RUNNABLE = ["connected", "expired"]; // an expired access token is refreshed by the CLI

if (picker) {
  api("GET", "/api/users")
    .then((users) => picker.replaceChildren(...users.map((u) => el("option", { value: u.id }))))
    .catch(() => {}); // the picker is a convenience: typing an id works without it
}

if (form) {
  const userId = form.dataset.user;
  const prompt = document.getElementById("prompt");
  const runButton = document.getElementById("run");
  const stopButton = document.getElementById("stop");
  const formError = document.getElementById("form-error");
  const status = document.getElementById("run-status");
  const answers = document.getElementById("answers");
  const boxes = [...form.querySelectorAll("input[name=provider]")];
  let controller = null;

  function showError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  async function loadProviders() {
    let creds;
    try {
      creds = await api("GET", `/api/users/${encodeURIComponent(userId)}/credentials`);
    } catch (err) {
      showError(`${err.message}. ${nextStep(err.code)}`);
      return;
    }
    const state = Object.fromEntries(creds.map((c) => [c.provider, c]));
    let any = false;
    for (const box of boxes) {
      const c = state[box.value];
      const label = box.parentElement.querySelector("[data-role=state]");
      const ok = c && RUNNABLE.includes(c.state);
      box.disabled = !ok;
      label.textContent = c ? (c.state === "needs_login" ? "needs login" : c.kind === "api_key" ? "API key" : c.state) : "not connected";
      if (ok && !any) box.checked = true;
      any = any || ok;
    }
    document.getElementById("no-providers").hidden = any;
  }

  // -- one column per provider -----------------------------------------------------------

  function column(provider, title) {
    const badge = el("span", { class: "badge warn", text: "starting…" });
    const node = el("section", { class: "answer", "data-provider": provider, "aria-label": title, "aria-busy": "true" },
      el("div", { class: "card-head" }, el("h2", { text: title }), badge));
    const col = { node, badge, tools: new Map(), out: null, thinking: null, ended: false };
    col.status = (text, tone) => {
      badge.textContent = text;
      badge.className = `badge ${tone}`;
    };
    return col;
  }

  function text(col, data) {
    if (data.thinking) {
      col.out = null;
      if (!col.thinking) col.node.append((col.thinking = el("p", { class: "thinking" })));
      col.thinking.append(data.text);
      return;
    }
    col.thinking = null;
    if (!col.out) col.node.append((col.out = el("p", { class: "out" })));
    col.out.append(data.text);
  }

  function toolUse(col, data) {
    col.out = col.thinking = null;
    const block = el("div", { class: "tool", "data-tool": data.name },
      el("strong", { text: `→ ${data.name}` }),
      el("pre", { text: JSON.stringify(data.input, null, 1) }));
    col.tools.set(data.id, block);
    col.node.append(block);
  }

  function toolResult(col, data) {
    let block = col.tools.get(data.id);
    if (!block) col.node.append((block = el("div", { class: "tool" })));
    if (data.isError) block.classList.add("failed");
    block.append(el("strong", { text: data.isError ? "← failed" : "←" }), el("pre", { class: "result", text: data.output }));
  }

  function result(col, data) {
    const u = data.usage || {};
    const parts = [];
    if (u.inputTokens != null) parts.push(`${u.inputTokens} tokens in`);
    if (u.cachedInputTokens) parts.push(`${u.cachedInputTokens} cached`);
    if (u.outputTokens != null) parts.push(`${u.outputTokens} out`);
    if (data.costUsd != null) parts.push(`$${data.costUsd.toFixed(4)}`);
    if (data.numTurns != null) parts.push(`${data.numTurns} turn${data.numTurns === 1 ? "" : "s"}`);
    if (parts.length) col.node.append(el("p", { class: "usage", text: parts.join(" · ") }));
  }

  function error(col, data) {
    if (data.code === "warning") {
      col.node.append(el("p", { class: "hint", text: `warning: ${data.message}` }));
      return;
    }
    const extra = data.stderrTail ? el("pre", { class: "console small", text: data.stderrTail }) : null;
    col.node.append(el("p", { class: "error", role: "alert", text: `${data.code}: ${data.message}` }), extra);
  }

  function done(col, data) {
    col.ended = true;
    col.node.setAttribute("aria-busy", "false");
    const took = data.durationMs != null ? ` · ${formatMs(data.durationMs)}` : "";
    const tone = data.status === "succeeded" ? "ok" : data.status === "cancelled" ? "warn" : "bad";
    col.status(`${data.status}${took}`, tone);
  }

  const HANDLERS = { text, tool_use: toolUse, tool_result: toolResult, result, error, done };

  // -- a run -----------------------------------------------------------------------------

  async function run() {
    const chosen = boxes.filter((b) => b.checked && !b.disabled);
    showError("");
    if (!chosen.length) return showError("Pick at least one connected provider.");
    if (!prompt.value.trim()) {
      prompt.focus();
      return showError("Write a prompt first.");
    }
    const providers = chosen.map((b) => b.value);
    const columns = new Map(chosen.map((b) => [b.value, column(b.value, b.dataset.title)]));
    answers.replaceChildren(...[...columns.values()].map((c) => c.node));
    const single = providers.length === 1;
    const body = single
      ? { userId, provider: providers[0], prompt: prompt.value }
      : { userId, providers, prompt: prompt.value };
    controller = new AbortController();
    runButton.disabled = true;
    stopButton.disabled = false;
    status.textContent = `Running on ${chosen.map((b) => b.dataset.title).join(", ")}…`;
    let stopped = false;
    try {
      const response = await fetch(single ? "/api/prompts" : "/api/perspectives", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", [CSRF_HEADER]: "1" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        let data = {};
        try { data = await response.json(); } catch { data = {}; }
        throw new ApiError(response.status, data);
      }
      for await (const { event, data } of readEvents(response)) {
        const col = columns.get(data.provider || (single ? providers[0] : null));
        if (event === "run" && col) col.status("running", "warn");
        else if (event === "session" && col && data.model) col.badge.title = `model ${data.model}`;
        else if (event === "end") break;
        else if (col && HANDLERS[event]) HANDLERS[event](col, data);
      }
      status.textContent = "Finished.";
    } catch (err) {
      if (err.name === "AbortError") {
        stopped = true;
        status.textContent = "Stopped: the runs were cancelled.";
      } else if (err instanceof ApiError) {
        showError(`${err.message}. ${nextStep(err.code)}`);
        status.textContent = "";
      } else {
        showError(`The stream broke: ${err.message}. Try again.`);
        status.textContent = "";
      }
    } finally {
      for (const col of columns.values()) {
        if (!col.ended) done(col, { status: stopped ? "cancelled" : "failed" });
      }
      controller = null;
      runButton.disabled = false;
      stopButton.disabled = true;
      if (stopped) runButton.focus(); // Stop is disabled now: keep the keyboard's place
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !runButton.disabled) {
      event.preventDefault();
      run();
    }
  });
  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });
  loadProviders();
}
