// Connect accounts: one card per provider, its state from the credentials API,
// and a live login panel per card (POST /api/auth/start, then the session's
// SSE stream; POST .../code with what the user pastes; DELETE to cancel).
import { api, el, formatMs, nextStep } from "./api.js";
import { checkAnswer, expectation } from "./paste.js";

const ORIGINS = {
  pool: "from the warm pool",
  restore: "restored from the golden snapshot",
  cold: "cold-booted",
};
const MODE_NAMES = {
  paste_code: "sign in, then paste the code",
  localhost_callback: "sign in in the browser, then paste the address",
  device_code: "device code",
};

function showError(node, err) {
  node.textContent = `${err.message}. ${nextStep(err.code)}`;
  node.hidden = false;
}

// Mark a field wrong, say why (its aria-describedby names the message), focus it.
function refuse(input, message, text) {
  message.textContent = text;
  message.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// -- the login panel ----------------------------------------------------------------------------

class Login {
  constructor(card, mode, opener) {
    this.card = card;
    this.mode = mode;
    this.opener = opener;
    this.clicked = performance.now();
    this.session = null;
    this.source = null;
    this.ended = false;
    this.cancelWanted = false;
    this.lastPhase = null;
    this.built = false;
    this.build();
    this.start();
  }

  build() {
    const panel = this.card.panel;
    const headingId = `login-title-${this.card.provider}`;
    panel.replaceChildren();
    panel.setAttribute("aria-labelledby", headingId);
    this.phases = el("ol", { class: "phases", "aria-label": "Progress" });
    this.pending = el("li", { class: "pending" }, el("span", { text: "Claiming a VM and starting the login…" }));
    this.ticker = el("span", { class: "ms", text: "0 ms" });
    this.pending.append(this.ticker);
    this.phases.append(this.pending);
    this.timer = setInterval(() => {
      this.ticker.textContent = formatMs(performance.now() - this.clicked);
    }, 100);
    this.body = el("div", { class: "login-body" });
    this.outcome = el("p", { class: "outcome", role: "status", hidden: true });
    this.cancelButton = el("button", { type: "button", class: "secondary", text: "Cancel" });
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.buttons = el("div", { class: "actions" }, this.cancelButton);
    panel.append(
      el("h3", { id: headingId, text: `Connecting ${this.card.title} (${MODE_NAMES[this.mode]})` }),
      this.phases,
      this.body,
      this.outcome,
      this.buttons,
    );
    panel.hidden = false;
    panel.focus();
  }

  elapsed(timingKey) {
    const ms = this.session && this.session.timings[timingKey];
    return typeof ms === "number" ? ms : performance.now() - this.clicked;
  }

  row(label, ms, cls) {
    this.phases.append(el("li", { class: cls }, el("span", { text: label }), el("span", { class: "ms", text: `+${formatMs(ms)}` })));
  }

  stopTicking() {
    clearInterval(this.timer);
    this.pending.remove();
  }

  async start() {
    try {
      const session = await api("POST", "/api/auth/start", {
        userId: this.card.user,
        provider: this.card.provider,
        mode: this.mode,
      });
      this.stopTicking();
      this.session = session;
      if (this.cancelWanted) {
        await this.cancel();
        return;
      }
      this.update(session);
      if (!session.ended) this.follow();
    } catch (err) {
      this.stopTicking();
      if (this.cancelWanted) {
        this.finishWith("Cancelled.", false);
        return;
      }
      const hint = err.body && err.body.hint ? ` ${err.body.hint}` : "";
      this.row("Could not start the login", performance.now() - this.clicked, "bad");
      this.finishWith(`${err.message}.${hint} ${nextStep(err.code)}`, false);
    }
  }

  follow() {
    // Same origin: the session cookie rides along; no token in the address.
    this.source = new EventSource(`/api/auth/sessions/${encodeURIComponent(this.session.id)}/events`);
    this.source.addEventListener("session", (event) => this.update(JSON.parse(event.data)));
    this.source.addEventListener("error", () => {
      if (this.ended) return;
      if (this.source.readyState === EventSource.CLOSED) {
        this.say("Lost the live updates from the controller. Reload the page to see where the login is.", false);
      }
    });
  }

  update(session) {
    if (this.ended) return;
    const previous = this.lastPhase;
    this.session = session;
    if (session.phase !== previous) {
      this.lastPhase = session.phase;
      this.addRows(previous, session);
    }
    this.render(session);
    if (session.ended) this.finish(session);
  }

  addRows(previous, session) {
    const t = session.timings;
    if (previous === null) {
      if (typeof t.claimMs === "number") {
        const origin = ORIGINS[session.vmOrigin];
        this.row(origin ? `VM claimed (${origin}), agent ready` : "VM claimed, agent ready", t.claimMs, "done");
      }
      if (typeof t.urlMs === "number") this.row("Login started: sign-in link ready", t.urlMs, "done");
    }
    const labels = {
      verifying: ["Checking your answer", null],
      capturing: ["Signed in: storing the credentials", "authenticatedMs"],
      authenticated: ["Connected", "capturedMs"],
      failed: ["Failed", "endedMs"],
      cancelled: ["Cancelled", "endedMs"],
      expired: ["Expired", "endedMs"],
    };
    if (previous === "verifying" && session.phase === "awaiting_user") {
      this.row("Not accepted: waiting for a new answer", this.elapsed(null), "bad");
    }
    const label = labels[session.phase];
    if (label) this.row(label[0], this.elapsed(label[1] || "none"), session.phase);
  }

  render(session) {
    if (!this.built && session.loginUrl) {
      this.built = true;
      const link = el("a", {
        class: "button",
        href: session.loginUrl,
        target: "_blank",
        rel: "noopener noreferrer",
        text: `Open the ${this.card.title} sign-in page (new tab)`,
      });
      this.body.append(el("p", {}, link));
      if (session.instructions) this.body.append(el("p", { class: "instructions", text: session.instructions }));
      if (session.userCode) {
        this.body.append(el("p", { text: "Enter this code on that page:" }), el("p", { class: "user-code", text: session.userCode }));
      }
      if (session.mode !== "device_code") this.buildPaste(session);
    }
    if (this.form) {
      const waiting = session.expects !== null && session.expects !== undefined;
      this.form.hidden = session.ended || !(waiting || session.phase === "verifying");
      this.send.disabled = !waiting;
    }
  }

  buildPaste(session) {
    const id = `paste-${this.card.provider}`;
    this.input = el("input", { id, type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": `${id}-hint ${id}-error` });
    this.pasteError = el("p", { id: `${id}-error`, class: "error", role: "alert", hidden: true });
    this.send = el("button", { type: "submit", text: "Send" });
    this.form = el(
      "form",
      { class: "paste", novalidate: true },
      el("label", { for: id, text: session.expects === "callbackUrl" ? "Address of the page you ended up on" : "Code from the sign-in page" }),
      el("p", { id: `${id}-hint`, class: "hint", text: expectation(this.card.provider, session) }),
      this.input,
      this.pasteError,
      el("div", { class: "actions" }, this.send),
    );
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("input", () => {
      this.pasteError.hidden = true;
      this.input.removeAttribute("aria-invalid");
    });
    this.body.append(this.form);
  }

  refuse(message) {
    refuse(this.input, this.pasteError, message);
  }

  async submit() {
    const check = checkAnswer(this.card.provider, this.session, this.input.value);
    if (check.error) {
      this.refuse(check.error);
      return;
    }
    this.send.disabled = true;
    try {
      const session = await api("POST", `/api/auth/sessions/${encodeURIComponent(this.session.id)}/code`, check.body);
      this.input.value = "";
      this.update(session);
    } catch (err) {
      if (!this.ended) {
        this.refuse(`${err.message}. ${nextStep(err.code)}`);
        this.send.disabled = false;
      }
    }
  }

  async cancel() {
    if (this.ended) return;
    this.cancelButton.disabled = true;
    this.say("Cancelling…", null);
    if (this.session === null) {
      this.cancelWanted = true; // start() cancels as soon as the session has an id
      return;
    }
    try {
      this.update(await api("DELETE", `/api/auth/sessions/${encodeURIComponent(this.session.id)}`));
    } catch (err) {
      if (!this.ended) {
        this.say(`${err.message}. ${nextStep(err.code)}`, false);
        this.cancelButton.disabled = false;
      }
    }
  }

  say(text, ok) {
    this.outcome.textContent = text;
    this.outcome.className = `outcome ${ok === true ? "success" : ok === false ? "error" : ""}`;
    this.outcome.setAttribute("role", ok === false ? "alert" : "status");
    this.outcome.hidden = false;
  }

  finish(session) {
    if (session.phase === "authenticated") {
      this.finishWith(`Connected. Prompts with ${this.card.title} now run with this account.`, true);
    } else if (session.phase === "cancelled" && (!session.error || session.error.code === "cancelled")) {
      this.finishWith(`Cancelled. ${nextStep("cancelled")}`, false);
    } else {
      const error = session.error || { code: session.phase, message: `The login ${session.phase}` };
      const hint = error.detail && error.detail.hint ? ` ${error.detail.hint}` : "";
      this.finishWith(`${error.message}.${hint} ${nextStep(error.code)}`, false);
    }
  }

  finishWith(text, ok) {
    this.ended = true;
    if (this.source) this.source.close();
    const hadFocus = this.card.panel.contains(document.activeElement);
    if (this.form) this.form.hidden = true;
    this.say(text, ok);
    const close = el("button", { type: "button", class: ok ? "" : "secondary", text: "Close" });
    close.addEventListener("click", () => this.card.closeLogin());
    const buttons = [close];
    if (!ok) {
      const again = el("button", { type: "button", text: "Try again" });
      again.addEventListener("click", () => this.card.connect(this.mode, this.opener));
      buttons.unshift(again);
    }
    this.buttons.replaceChildren(...buttons);
    if (hadFocus) buttons[0].focus();
    this.card.loginEnded();
  }
}

// -- a provider's card --------------------------------------------------------------------------

class Card {
  constructor(node, page) {
    this.node = node;
    this.page = page;
    this.user = page.user;
    this.provider = node.dataset.provider;
    this.title = node.dataset.title;
    this.state = node.querySelector(".state");
    this.expiry = node.querySelector(".expiry");
    this.panel = node.querySelector(".panel");
    this.disconnectButton = node.querySelector("[data-action=disconnect]");
    this.connectButtons = [...node.querySelectorAll("[data-action=connect]")];
    this.login = null;
    this.status = el("p", { class: "card-status", role: "status", hidden: true });
    node.querySelector(".actions").after(this.status);
    for (const button of this.connectButtons) {
      button.addEventListener("click", () => this.connect(button.dataset.mode, button));
    }
    this.disconnectButton.addEventListener("click", () => this.disconnect());
    this.setupKey();
  }

  setState(state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }

  showCredential(credential) {
    this.credential = credential;
    if (this.login && !this.login.ended) return; // "Connecting…" until the login ends
    this.disconnectButton.hidden = !credential;
    this.expiry.hidden = true;
    if (!credential) {
      this.setState("not_connected", "Not connected");
      return;
    }
    const how = credential.kind === "api_key" ? "with an API key" : "signed in";
    if (credential.state === "connected") {
      this.setState("connected", "Connected");
      this.expiry.textContent = credential.expiresAt
        ? `Connected (${how}). The access token expires ${when(credential.expiresAt)}; the CLI renews it while it runs.`
        : `Connected (${how}).`;
    } else {
      this.setState("expired", "Expired — needs login");
      this.expiry.textContent = credential.expiresAt
        ? `Expired ${when(credential.expiresAt)}: connect again.`
        : "The provider no longer accepts these credentials: connect again.";
    }
    this.expiry.hidden = false;
  }

  flash(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  connect(mode, opener) {
    if (this.login && !this.login.ended) return;
    this.flash("");
    this.hideKey();
    this.setState("connecting", "Connecting…");
    for (const button of this.connectButtons) button.disabled = true;
    this.login = new Login(this, mode, opener);
  }

  loginEnded() {
    for (const button of this.connectButtons) button.disabled = false;
    this.page.refresh();
  }

  closeLogin() {
    const opener = this.login ? this.login.opener : null;
    this.login = null;
    this.panel.hidden = true;
    this.panel.replaceChildren();
    this.showCredential(this.credential);
    if (opener) opener.focus();
  }

  async disconnect() {
    this.disconnectButton.disabled = true;
    try {
      await api("DELETE", `/api/users/${encodeURIComponent(this.user)}/credentials/${this.provider}`);
      this.flash(`Disconnected: ${this.title}'s credentials are deleted.`);
      await this.page.refresh();
      this.connectButtons[0]?.focus();
    } catch (err) {
      this.flash(`${err.message}. ${nextStep(err.code)}`);
    } finally {
      this.disconnectButton.disabled = false;
    }
  }

  // -- API-key mode ------------------------------------------------------------------------------

  setupKey() {
    this.keyToggle = this.node.querySelector("[data-action=api-key]");
    this.keyForm = this.node.querySelector("form.api-key");
    if (!this.keyToggle || !this.keyForm) return;
    this.keyInput = this.keyForm.querySelector("input");
    this.keyError = this.keyForm.querySelector(".error");
    this.keyToggle.addEventListener("click", () => {
      if (this.keyForm.hidden) {
        this.keyForm.hidden = false;
        this.keyToggle.setAttribute("aria-expanded", "true");
        this.keyInput.focus();
      } else {
        this.hideKey();
      }
    });
    this.keyForm.querySelector("[data-action=api-key-cancel]").addEventListener("click", () => {
      this.hideKey();
      this.keyToggle.focus();
    });
    this.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveKey();
    });
  }

  hideKey() {
    if (!this.keyForm) return;
    this.keyForm.hidden = true;
    this.keyInput.value = "";
    this.keyError.hidden = true;
    this.keyInput.removeAttribute("aria-invalid");
    this.keyToggle.setAttribute("aria-expanded", "false");
  }

  refuseKey(message) {
    refuse(this.keyInput, this.keyError, message);
  }

  async saveKey() {
    const key = this.keyInput.value.trim();
    if (!key) return this.refuseKey("Paste the API key first.");
    if (/\s/.test(key)) return this.refuseKey("An API key has no spaces: copy it again exactly.");
    const button = this.keyForm.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await api("POST", "/api/auth/start", { userId: this.user, provider: this.provider, mode: "api_key", apiKey: key });
      this.hideKey();
      this.flash(`Connected with an API key. Prompts with ${this.title} now use it.`);
      await this.page.refresh();
      this.keyToggle.focus();
    } catch (err) {
      this.refuseKey(`${err.message}. ${nextStep(err.code)}`);
    } finally {
      button.disabled = false;
    }
  }
}

// -- the page -----------------------------------------------------------------------------------

class ConnectPage {
  constructor(root) {
    this.user = root.dataset.user;
    this.error = document.getElementById("page-error");
    this.cards = [...root.querySelectorAll(".provider")].map((node) => new Card(node, this));
  }

  async refresh() {
    try {
      const credentials = await api("GET", `/api/users/${encodeURIComponent(this.user)}/credentials`);
      const byProvider = Object.fromEntries(credentials.map((c) => [c.provider, c]));
      for (const card of this.cards) card.showCredential(byProvider[card.provider]);
      this.error.hidden = true;
    } catch (err) {
      showError(this.error, err);
    }
  }
}

// -- the user picker (service and admin tokens) -------------------------------------------------

async function setupPicker() {
  const list = document.getElementById("known-users");
  const create = document.getElementById("create-user");
  const error = document.getElementById("picker-error");
  if (!list || !create) return;
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = create.querySelector("input");
    const id = input.value.trim();
    if (!input.checkValidity() || !id) {
      error.textContent = "A user id is letters, digits and . _ : @ - (no spaces), up to 128 characters.";
      error.hidden = false;
      input.focus();
      return;
    }
    try {
      await api("POST", "/api/users", { id });
      window.location.assign(`/remote-cli/auth?user=${encodeURIComponent(id)}`);
    } catch (err) {
      showError(error, err);
    }
  });
  try {
    const users = await api("GET", "/api/users");
    list.replaceChildren(...users.map((u) => el("option", { value: u.id, text: u.name || u.id })));
  } catch (err) {
    showError(error, err);
  }
}

setupPicker();
const root = document.getElementById("connect");
if (root) new ConnectPage(root).refresh();
