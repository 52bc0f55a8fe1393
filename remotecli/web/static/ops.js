// What the VMs page and a VM's page share: ages, badges, the facts list.
import { el } from "./api.js";

export function age(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

const STATE_TONE = { ready: "ok", claimed: "ok", starting: "warn", stopping: "warn", failed: "bad" };

export function stateBadge(state) {
  return el("span", { class: `badge ${STATE_TONE[state] || ""}`, text: state });
}

// The monitor's view: ok, failing (n in a row) or not checked yet; ended VMs have none.
export function healthBadge(vm) {
  if (!["ready", "claimed"].includes(vm.state)) return el("span", { class: "hint", text: "—" });
  const h = vm.health || {};
  if (h.consecutiveFailures > 0) {
    return el("span", { class: "badge bad", text: `failing (${h.consecutiveFailures})` });
  }
  if (h.lastOkAt) return el("span", { class: "badge ok", text: "ok", title: `checked ${when(h.lastOkAt)}` });
  return el("span", { class: "badge", text: "not checked yet" });
}

export function lastError(vm) {
  if (vm.health && vm.health.lastError) return vm.health.lastError;
  if (vm.state === "failed") return vm.stopReason || "failed";
  return "";
}

// Fill a <dl> with [term, value] pairs (value: text or a node); empty values are left out.
export function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(el("dt", { text: term }), el("dd", {}, value instanceof Node ? value : String(value)));
  }
}
