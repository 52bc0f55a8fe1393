// The VMs page: GET /api/vms every few seconds (there is no VM event stream;
// a listing is one DB query), the backend and the golden snapshot above.
import { api, el, formatMs, nextStep } from "./api.js";
import { age, facts, healthBadge, lastError, stateBadge } from "./ops.js";

const REFRESH_MS = 3000;
const body = document.querySelector("#vms tbody");
const error = document.getElementById("vms-error");
const updated = document.getElementById("vms-updated");
const ended = document.getElementById("show-ended");
let timer = null;

function snapshotText(s) {
  const parts = [s.state];
  if (s.name) parts.push(s.name);
  if (s.preparedSeconds !== undefined) parts.push(`made in ${formatMs(s.preparedSeconds * 1000)}`);
  if (s.reason) parts.push(s.reason);
  return parts.join(" · ");
}

function poolText(pool) {
  return Object.entries(pool)
    .map(([role, p]) => `${role}: ${p.ready}/${p.target} ready${p.starting ? `, ${p.starting} starting` : ""}` +
      (p.lastError ? ` (last error: ${p.lastError})` : ""))
    .join(" · ");
}

function row(vm, now) {
  const link = el("a", { href: `/remote-cli/vms/${vm.id}`, text: vm.id });
  return el(
    "tr",
    { "data-vm": vm.id, "data-state": vm.state },
    el("td", {}, link),
    el("td", {}, stateBadge(vm.state)), // second: still in view on a phone's narrow table
    el("td", { text: vm.role }),
    el("td", { text: vm.userId || "—" }),
    el("td", { text: vm.backend }),
    el("td", { text: vm.origin }),
    el("td", { class: "num", text: age(vm.createdAt, now), title: vm.createdAt }),
    el("td", {}, healthBadge(vm)),
    el("td", { class: "err", text: lastError(vm) }),
  );
}

async function refresh() {
  clearTimeout(timer);
  try {
    const data = await api("GET", `/api/vms${ended.checked ? "?all=true" : ""}`);
    const b = data.backend;
    facts(document.getElementById("system"), [
      ["Backend", `${b.name} (isolation: ${b.isolation}${b.snapshots ? ", snapshots" : ""})`],
      ["Why", b.reason],
      ["Golden snapshot", snapshotText(data.snapshot)],
      ["Warm pool", poolText(data.pool)],
    ]);
    const now = Date.now();
    body.replaceChildren(...data.vms.map((vm) => row(vm, now)));
    if (!data.vms.length) {
      body.append(el("tr", {}, el("td", { colspan: 9, class: "hint", text: "No VMs." })));
    }
    error.hidden = true;
    updated.textContent = `${data.vms.length} VM${data.vms.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    error.textContent = `${err.message}. ${nextStep(err.code)}`;
    error.hidden = false;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

ended.addEventListener("change", refresh);
refresh();
