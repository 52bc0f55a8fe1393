// The public API, as the dashboard's pages call it: JSON in and out, the
// session cookie for authentication, the CSRF header on every unsafe method
// (controller/security.py). Errors become ApiError with the API's code and
// message, plus what the user can do next.

export const CSRF_HEADER = "X-Remotecli-Csrf";

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `the controller answered HTTP ${status}`);
    this.status = status;
    this.code = body.code || `http_${status}`;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers[CSRF_HEADER] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, {
      code: "network",
      message: "The controller did not answer. Check your connection, then try again.",
    });
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data || {});
  return data;
}

// What to do after an error, by the API's stable error code.
const NEXT_STEPS = {
  network: "Check your connection, then try again.",
  token_required: "Sign in again.",
  invalid_token: "Sign in again with a valid token.",
  csrf_required: "Reload the page and try again.",
  forbidden_user: "Sign in with a token of this user, or a service token.",
  unknown_user: "Pick an existing user, or create it first.",
  vm_not_ready: "Try again. If it keeps failing, an operator should look at the VMs page.",
  vms_unavailable: "The controller runs no VMs right now: an operator should check its log.",
  backend_unavailable: "No VM backend runs on this host: an operator should run `remotecli doctor`.",
  auth_unavailable: "The login service is not running: an operator should check the controller's log.",
  agent_unreachable: "Try again; if it keeps failing, start a new login.",
  state_mismatch: "That answer belongs to an older sign-in. Use the newest link, then paste again.",
  invalid_callback_url: "Copy the whole address from the address bar, then paste it again.",
  callback_host_not_allowed: "Copy the address of the page you ended up on (it starts with http://localhost).",
  callback_port_mismatch: "Use the newest link: the address must come from this login.",
  callback_path_mismatch: "Copy the address of the page you ended up on, not another page.",
  callback_listener_gone: "This login is no longer waiting. Start a new one.",
  invalid_code: "Copy the code again, all of it, and paste it.",
  code_rejected: "Copy the code again, all of it, and paste it; or start a new login.",
  session_ended: "Start a new login.",
  session_capturing: "Wait a moment: the login already succeeded.",
  login_busy: "Wait for the previous answer to be checked.",
  login_not_ready: "Wait until the sign-in link is shown.",
  superseded: "Another login for this account was started (perhaps in another tab).",
  cancelled: "Connect again whenever you are ready.",
  expired: "The login took too long. Start a new one.",
  controller_restarted: "Start a new login.",
  controller_stopped: "Start a new login once the controller is back.",
  invalid_api_key: "Paste the key exactly as the provider shows it.",
};

export function nextStep(code) {
  return NEXT_STEPS[code] || "Try again. If it keeps failing, start a new login.";
}

export function formatMs(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

// Build an element: el("p", {class: "x", text: "hi"}, child, ...).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
