// Catalog page: add and delete references through the API, with the key the analyst typed.
"use strict";

const keyInput = document.getElementById("api-key");
const statusLine = document.getElementById("status");
const addForm = document.getElementById("add-form");

// Kept for this tab only, so a shared laptop does not remember it.
keyInput.value = sessionStorage.getItem("imgmatch-api-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("imgmatch-api-key", keyInput.value));

function say(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

async function send(method, url, body) {
  const response = await fetch(url, { method, body, headers: { "X-API-Key": keyInput.value } });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${data.detail ? JSON.stringify(data.detail) : response.statusText}`);
  return data;
}

addForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new FormData(addForm);
  if (!body.get("metadata")) body.set("metadata", "{}");
  say("Adding…");
  try {
    const reference = await send("POST", "/v1/references", body);
    say(`Added reference #${reference.reference_id} (${reference.design}).`);
    setTimeout(() => window.location.reload(), 600);
  } catch (error) {
    say(`Not added: ${error.message}`, true);
  }
});

document.getElementById("references").addEventListener("click", async (event) => {
  const button = event.target.closest("button.delete");
  if (!button) return;
  const id = button.dataset.id;
  if (!window.confirm(`Delete reference #${id}? Checks stop reporting it at once.`)) return;
  try {
    await send("DELETE", `/v1/references/${id}`);
    button.closest("li").remove();
    say(`Deleted reference #${id}.`);
  } catch (error) {
    say(`Not deleted: ${error.message}`, true);
  }
});
