// What the login panel's paste box expects, and the checks it runs before
// sending anything: the same checks the agent makes (agent/relay.py, the
// providers' format_code), so an answer that cannot be right never leaves the page.

function param(url, name) {
  try {
    return new URL(url).searchParams.get(name);
  } catch {
    return null;
  }
}

// The address the provider sends the browser back to (Codex: the CLI's listener).
function callbackBase(session) {
  return param(session.loginUrl, "redirect_uri") || "http://localhost:1455/auth/callback";
}

export function expectation(provider, session) {
  if (session.expects === "callbackUrl") {
    return (
      "The whole address of the page you end up on after signing in. That page does not " +
      `load, which is expected: copy its address; it starts with ${callbackBase(session)}?code=`
    );
  }
  if (provider === "claude_code") {
    return "The code the Claude page shows after you sign in: two parts joined by a # (like abc123…#xyz789…).";
  }
  return "The authorization code the page shows after you sign in (one word, no spaces).";
}

function checkCallback(session, value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return `That is not an address. Copy the whole address from the address bar: it starts with ${callbackBase(session)}`;
  }
  const expected = new URL(callbackBase(session));
  const local = ["localhost", "127.0.0.1"];
  if (url.protocol !== "http:" || !local.includes(url.hostname) || url.username || url.password) {
    return `That is not the address the sign-in sends you to: it starts with ${expected.origin}${expected.pathname}`;
  }
  if (url.port !== expected.port) {
    return `That address has port ${url.port || "80"}; this login waits on port ${expected.port}. Use the newest link above.`;
  }
  if (url.pathname !== expected.pathname) {
    return `That address is not the callback page (${expected.pathname}): copy the address of the page you ended up on.`;
  }
  if (!url.searchParams.get("code") && !url.searchParams.get("error")) {
    return "That address has no code in it: copy it after signing in, from the page that does not load.";
  }
  const state = param(session.loginUrl, "state");
  if (state && url.searchParams.get("state") !== state) {
    return "That address comes from another sign-in: use the newest link above, then copy the address again.";
  }
  return null;
}

function checkCode(provider, session, value) {
  if (/^https?:\/\//i.test(value)) return "Paste the code the page shows, not an address.";
  if (/\s/.test(value)) return "A code has no spaces: copy it again exactly as the page shows it.";
  if (provider === "claude_code") {
    const parts = value.split("#");
    if (parts.length !== 2 || !parts[0] || !parts[1]) {
      return "Claude's code has two parts joined by one # (like abc123…#xyz789…): copy the whole code.";
    }
    const state = param(session.loginUrl, "state");
    if (state && parts[1] !== state) {
      return "This code belongs to another sign-in (the part after # does not match this login): use the newest link above and copy the new code.";
    }
  }
  return null;
}

// {error} when the answer cannot be right, else {body} for POST .../code.
export function checkAnswer(provider, session, raw) {
  const value = raw.trim();
  if (session.expects === "callbackUrl") {
    if (!value) return { error: "Paste the address of the page you ended up on first." };
    const error = checkCallback(session, value);
    return error ? { error } : { body: { callbackUrl: value } };
  }
  if (!value) return { error: "Paste the code first." };
  const error = checkCode(provider, session, value);
  return error ? { error } : { body: { code: value } };
}
