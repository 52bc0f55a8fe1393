// The header's "Sign out": clears the session cookie (DELETE /api/session).
import { api } from "./api.js";

const button = document.getElementById("sign-out");
if (button) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("DELETE", "/api/session");
    } finally {
      window.location.assign("/remote-cli/login");
    }
  });
}
