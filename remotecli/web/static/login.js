// The sign-in form: POST /api/session {"token"} sets the HttpOnly cookie, then
// the browser goes where it was headed (a path on this site, checked by the server).
import { api, nextStep } from "./api.js";

const form = document.getElementById("login-form");
const input = document.getElementById("token");
const error = document.getElementById("login-error");

function fail(message) {
  error.textContent = message;
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    fail("Paste an API token first (it starts with rcli_).");
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("POST", "/api/session", { token });
    input.value = "";
    window.location.assign(form.dataset.next);
  } catch (err) {
    fail(`${err.message}. ${nextStep(err.code)}`);
  } finally {
    button.disabled = false;
  }
});
input.focus();
