"use strict";
setupLanguageToggle();
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.hidden = true;
  const button = document.getElementById("login-button");
  button.disabled = true;
  try {
    const response = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
      }),
    });
    if (response.ok) {
      window.location.assign("/management.html");
      return;
    }
    const body = await response.json().catch(() => ({}));
    error.textContent = response.status === 429 ? t("login.throttled")
      : response.status === 401 ? t("login.failed")
      : (body.error && body.error.message) || `HTTP ${response.status}`;
    error.hidden = false;
  } catch (failure) {
    error.textContent = String(failure);
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
