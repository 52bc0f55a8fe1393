// One VM: its facts, readiness timeline, claim trace and failure evidence
// (GET /api/vms/{id}, refreshed), the console followed by byte offset
// (GET /api/vms/{id}/console?since=), the agent's logins and runs
// (GET /api/vms/{id}/sessions) and Destroy with a confirm step (DELETE).
import { api, el, formatMs, nextStep } from "./api.js";
import { age, facts, healthBadge, lastError, when } from "./ops.js";

const root = document.getElementById("vm");
const vmId = root.dataset.vm;
const base = `/api/vms/${vmId}`;
const pageError = document.getElementById("vm-error");
const CONSOLE_MS = 1000;
const DETAIL_MS = 3000;
const AGENT_MS = 5000;
const ENDED = ["stopped", "failed"];
// The boot phases in order; a restore has STATE_RESTORED in place of the kernel and init.
const PHASES = ["VMM_STARTED", "KERNEL_BOOTED", "INIT_STARTED", "STATE_RESTORED", "AGENT_LISTENING", "AGENT_READY"];

function fail(err) {
  pageError.textContent = `${err.message}. ${nextStep(err.code)}`;
  pageError.hidden = false;
}

// -- the VM itself ---------------------------------------------------------------------

function timeline(phases, origin) {
  const list = document.getElementById("timeline");
  const durations = phases.durations || {};
  const skipped = phases.skipped || {};
  const longest = Math.max(0.001, ...Object.values(durations));
  const names = [...PHASES, ...Object.keys(durations), ...Object.keys(skipped)]
    .filter((p, i, all) => all.indexOf(p) === i && (p in durations || p in skipped));
  list.replaceChildren(
    ...names.map((phase) => {
      if (phase in durations) {
        const seconds = durations[phase];
        const bar = el("span", { class: "bar", role: "presentation" });
        bar.style.width = `${Math.max(1, (100 * seconds) / longest)}%`;
        return el("li", { "data-phase": phase }, el("span", { text: phase }), el("span", {}, bar),
          el("span", { class: "ms", text: formatMs(seconds * 1000) }));
      }
      return el("li", { class: "skipped", "data-phase": phase }, el("span", { text: phase }),
        el("span", { text: `skipped: ${skipped[phase]}` }));
    }),
  );
  if (!names.length) list.append(el("li", { class: "skipped", text: "No phase reached yet." }));
  const restored = "STATE_RESTORED" in durations;
  const total = phases.reached ? Math.max(0, ...Object.values(phases.reached)) : 0;
  document.getElementById("boot-kind").textContent =
    `${restored ? "Restored from the golden snapshot" : "Cold boot"} (origin: ${origin})` +
    (total ? ` · ${formatMs(total * 1000)} to the last phase` : "");
}

function claimTrace(claim) {
  const list = document.getElementById("claim");
  if (!claim) {
    list.replaceChildren(el("li", { class: "hint", text: "Not claimed: a warm VM waiting in the pool." }));
    return;
  }
  list.replaceChildren(
    ...claim.tried.map((t) => {
      const detail = t.reason || t.message || t.vmId || t.code || "";
      return el("li", {}, el("strong", { text: t.source }), ` ${t.result}`, detail ? ` — ${detail}` : "");
    }),
    el("li", { class: "hint", text: `served by ${claim.origin}${claim.seconds !== undefined ? ` in ${formatMs(claim.seconds * 1000)}` : ""}` }),
  );
}

function evidence(error) {
  const box = document.getElementById("evidence");
  box.hidden = !error;
  if (!error) return;
  facts(box.querySelector("dl"), [
    ["Error", `${error.code}: ${error.message}`],
    ["Cause", error.cause],
    ["Hint", error.hint],
    ["Last phase", error.lastPhase],
    ["Waiting for", error.waitingFor],
    ["Unit", error.unitState],
  ]);
  const tail = box.querySelector("pre");
  tail.textContent = error.consoleTail || "";
  tail.hidden = !error.consoleTail;
}

let current = null;
let detailTimer = null;
// Each refresh has a number; an answer that arrives after a newer refresh began
// (a poll in flight while Destroy ran) is stale and dropped, or it would show
// the VM alive again.
let detailGeneration = 0;

async function refreshDetail() {
  clearTimeout(detailTimer);
  const generation = ++detailGeneration;
  try {
    const vm = await api("GET", base);
    if (generation !== detailGeneration) return;
    current = vm;
    const state = document.getElementById("vm-state");
    state.textContent = vm.state;
    state.dataset.state = vm.state;
    const t = vm.timings || {};
    facts(document.getElementById("summary"), [
      ["Role", vm.role], ["User", vm.userId || "—"], ["Backend", vm.backend], ["Origin", vm.origin],
      ["Instance", vm.instanceId], ["Created", `${when(vm.createdAt)} (${age(vm.createdAt)} ago)`],
      ["Ready", vm.readyAt ? when(vm.readyAt) : null],
      ["Start", t.startSeconds !== undefined ? formatMs(t.startSeconds * 1000) : null],
      ["Health", healthBadge(vm)], ["Last error", lastError(vm)],
      ["Stopped", vm.stoppedAt ? `${when(vm.stoppedAt)}: ${vm.stopReason || ""}` : null],
    ]);
    timeline(vm.phases || {}, vm.origin);
    claimTrace(vm.claim);
    evidence(vm.error);
    document.getElementById("destroy-actions").hidden = ENDED.includes(vm.state);
    if (ENDED.includes(vm.state)) document.getElementById("destroy-confirm").hidden = true;
    pageError.hidden = true;
  } catch (err) {
    if (generation !== detailGeneration) return;
    fail(err);
  }
  if (!current || !ENDED.includes(current.state)) detailTimer = setTimeout(refreshDetail, DETAIL_MS);
}

// -- the console, followed -------------------------------------------------------------

const consoleBox = document.getElementById("console");
const consoleStatus = document.getElementById("console-status");
let offset = null;

function append(text) {
  if (!text) return;
  const atBottom = consoleBox.scrollHeight - consoleBox.scrollTop - consoleBox.clientHeight < 40;
  consoleBox.append(text);
  if (atBottom) consoleBox.scrollTop = consoleBox.scrollHeight;
}

async function follow() {
  const url = offset === null ? `${base}/console?lines=500` : `${base}/console?since=${offset}`;
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin" });
  } catch {
    consoleStatus.textContent = "The controller did not answer; retrying…";
    setTimeout(follow, CONSOLE_MS * 3);
    return;
  }
  if (response.status === 404) {
    consoleStatus.textContent = "No console: the VM is gone and none was saved.";
    return;
  }
  if (!response.ok) {
    consoleStatus.textContent = `The console could not be read (HTTP ${response.status}); retrying…`;
    setTimeout(follow, CONSOLE_MS * 3);
    return;
  }
  append(await response.text());
  const live = response.headers.get("X-Console-Live") === "true";
  if (!live) {
    consoleStatus.textContent = "The VM stopped: this is the console saved when it went away.";
    return;
  }
  offset = Number(response.headers.get("X-Console-Offset"));
  consoleStatus.textContent = "Following…";
  setTimeout(follow, CONSOLE_MS);
}

// -- the agent -------------------------------------------------------------------------

function cells(tbody, rows, empty, columns) {
  tbody.replaceChildren(...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: v ?? "—" })))));
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: columns, class: "hint", text: empty })));
}

function usageText(usage, cost) {
  if (!usage) return null;
  const parts = [`${usage.inputTokens ?? "?"} in`, `${usage.outputTokens ?? "?"} out`];
  if (cost) parts.push(`$${cost}`);
  return parts.join(" · ");
}

async function refreshAgent() {
  const status = document.getElementById("agent-status");
  let data;
  try {
    data = await api("GET", `${base}/sessions`);
  } catch (err) {
    status.textContent = `${err.message}.`;
    setTimeout(refreshAgent, AGENT_MS);
    return;
  }
  status.textContent = !data.live
    ? "The VM is not running: only the controller's record of its runs is left."
    : data.agentError ? `The agent did not answer: ${data.agentError.message}` : "";
  cells(document.querySelector("#agent-logins tbody"),
    data.sessions.map((s) => [s.sessionId, s.provider, s.mode, s.phase, when(s.createdAt),
      s.error ? `${s.error.code}: ${s.error.message}` : ""]),
    "No login in this VM.", 6);
  // The prompts the agent runs now (its own run ids), then the controller's record.
  const runs = [
    ...data.runs.map((r) => [`agent ${r.runId}`, "", r.provider, "running in the agent", when(r.startedAt), ""]),
    ...data.recentRuns.map((r) => [r.runId, r.userId, r.provider, r.status, when(r.createdAt),
      usageText(r.usage, r.costUsd)]),
  ];
  cells(document.querySelector("#agent-runs tbody"), runs, "No prompt ran in this VM.", 6);
  if (data.live) setTimeout(refreshAgent, AGENT_MS);
}

// -- destroy ---------------------------------------------------------------------------

const destroy = document.getElementById("destroy");
const confirmBox = document.getElementById("destroy-confirm");
const yes = document.getElementById("destroy-yes");

destroy.addEventListener("click", () => {
  confirmBox.hidden = false;
  destroy.setAttribute("aria-expanded", "true");
  document.getElementById("destroy-no").focus();
});
document.getElementById("destroy-no").addEventListener("click", () => {
  confirmBox.hidden = true;
  destroy.setAttribute("aria-expanded", "false");
  destroy.focus();
});
yes.addEventListener("click", async () => {
  yes.disabled = true;
  try {
    await api("DELETE", base);
    confirmBox.hidden = true;
    current = null;
    await refreshDetail();
    document.getElementById("vm-state").focus();
  } catch (err) {
    fail(err);
  } finally {
    yes.disabled = false;
  }
});

refreshDetail();
follow();
refreshAgent();
